#!/usr/bin/env bash
# Prepares what a GPU machine without network needs for scripts/gpu_check.sh (docs/gpu.md):
# the release binary built with `--features vulkan`, stripped and gzipped (97 MB → 25 MB, under
# the device tool's 64 MiB), the SmolLM2 tokenizer, and the Vulkan loader's Debian packages
# (the GPU image has the NVIDIA driver but no loader). Writes .gpu/ and .gl/ (both added to
# .git/info/exclude); carry them with datasets/generated.
#   bash scripts/gpu_prepare.sh      (the first vulkan build takes ~17 min on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.gl/ /.gpu/; do grep -qxF "$d" .git/info/exclude || echo "$d" >> .git/info/exclude; done
cargo build --release -p qat-cli --features vulkan
mkdir -p .gpu/tokenizer .gl
strip -o .gpu/qat target/release/qat
gzip -9 -f .gpu/qat
cp models/smollm2-135m-instruct/tokenizer.json models/smollm2-135m-instruct/tokenizer_config.json .gpu/tokenizer/
lists=$(mktemp -d)
mkdir -p "$lists/partial"
o="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=$lists"
apt-get $o update > /dev/null
(cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
rm -rf "$lists"
du -sh .gpu .gl datasets/generated
