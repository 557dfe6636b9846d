"""Writes the Parquet / compressed-JSONL fixtures of crates/qat-data/tests/hub_sources.rs.

Each dataset is written twice or more: as Parquet by pyarrow (the way `datasets` and pandas store
Hub datasets; snappy, zstd and gzip page compression) and as its plain JSON twin, plus gzip and
zstd compressed JSONL. The Rust test checks that every copy yields the same documents and tokens.
Records come from ../shared/data (a few of each kind), so the fixture is small.

    /work/venv/bin/python scripts/make_parquet_fixture.py [SHARED_DIR]
"""

import gzip
import json
import pathlib
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

repo = pathlib.Path(__file__).resolve().parent.parent
shared = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else repo.parent / "shared"
out = repo / "crates/qat-data/tests/fixtures/hub"
out.mkdir(parents=True, exist_ok=True)


def jsonl(records):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


# Q&A (GSM8K): Parquet with zstd pages; JSONL plain, .gz and .zst.
qa = [json.loads(l) for l in (shared / "data/math/gsm8k_train.jsonl").read_text().splitlines()[:12]]
pq.write_table(pa.Table.from_pylist(qa), out / "qa.parquet", compression="zstd")
(out / "qa.jsonl").write_bytes(jsonl(qa))
(out / "qa.jsonl.gz").write_bytes(gzip.compress(jsonl(qa), mtime=0))
(out / "qa.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=3).compress(jsonl(qa)))

# Alpaca: Parquet with gzip pages (one `input` null: absent values are null in Parquet);
# the twin is the JSON array format qat reads for Alpaca.
alpaca = json.loads((shared / "data/chat/alpaca_2000.json").read_text())[:12]
alpaca[3]["input"] = None
pq.write_table(pa.Table.from_pylist(alpaca), out / "alpaca.parquet", compression="gzip")
(out / "alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False, indent=1))

# Chat in the Hub's `messages` layout (a list of {role, content} structs), snappy pages, in
# two row groups so that the reader crosses a row-group boundary.
sharegpt = json.loads((shared / "data/chat/sharegpt_500.json").read_text())[:10]
roles = {"human": "user", "gpt": "assistant", "system": "system"}
chat = [{"messages": [{"role": roles[t["from"]], "content": t["value"]} for t in c["conversations"]]} for c in sharegpt]
pq.write_table(pa.Table.from_pylist(chat), out / "chat.parquet", compression="snappy", row_group_size=4)
(out / "chat.jsonl").write_bytes(jsonl(chat))

# Plain text in a `text` column (format = "jsonl", field = "text"), uncompressed pages.
lines = [l for l in (shared / "data/text/tinystories_val_subset.txt").read_text().split("\n\n") if l.strip()][:16]
text = [{"text": t.strip(), "id": i} for i, t in enumerate(lines)]
pq.write_table(pa.Table.from_pylist(text), out / "text.parquet", compression="none")
(out / "text.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=19).compress(jsonl(text)))

for p in sorted(out.iterdir()):
    print(f"{p.relative_to(repo)}: {p.stat().st_size} bytes")
