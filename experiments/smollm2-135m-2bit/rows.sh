# Shared by run_recipes.sh and run_formats.sh (sourced, from the repository root): the build and
# one experiment row = one `qat train` of configs/smollm2_135m_2bit_mix.toml with `--set`
# overrides, then its GGUF export (with `qat export`'s report beside it). Rows to run: all, or
# those named as the script's arguments (two invocations can share the machine).
# Before sourcing: `out` (the runs directory); optional arrays `train_flags`, `export_flags`.
cargo build --release -q -p qat-cli
qat=./target/release/qat
mkdir -p "$out"
only=" $* "
row() {  # name, then --set overrides of configs/smollm2_135m_2bit_mix.toml
  local name=$1; shift
  [ -z "${TABLE_ONLY:-}" ] || return 0  # TABLE_ONLY=1: print the table of what has run
  [ "$only" = "  " ] || [[ "$only" == *" $name "* ]] || return 0
  [ -f $out/$name/summary.json ] || $qat train configs/smollm2_135m_2bit_mix.toml --quiet --set train.max_steps=0 \
    --set output.dir=\"../$out/$name\" "${train_flags[@]}" "$@" > $out/$name.log 2>&1
  [ -f $out/$name.gguf ] || $qat export $out/$name --format gguf "${export_flags[@]}" --out $out/$name.gguf > $out/$name.export.log 2>&1
}
