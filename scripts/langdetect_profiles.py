#!/usr/bin/python3
"""Packs langdetect 1.0.9's 55 language profiles into one gzip'd JSON file for langdetect/.

    python3 scripts/langdetect_profiles.py ../shared/data/langdetect/profiles langdetect/profiles.json.gz

The output is a JSON array of the profiles ({"name", "n_words", "freq"}, unchanged) sorted by
name, gzip'd with a zero timestamp so that the same input gives the same bytes.
"""
import gzip
import json
import os
import sys


def main(src, dst):
    profiles = []
    for name in sorted(os.listdir(src)):
        with open(os.path.join(src, name), encoding="utf-8") as f:
            p = json.load(f)
        if p.get("name") != name:
            sys.exit(f"{name}: profile name {p.get('name')!r} differs from its file name")
        profiles.append({"name": p["name"], "n_words": p["n_words"], "freq": p["freq"]})
    data = json.dumps(profiles, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
    with open(dst, "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0, filename="") as z:
            z.write(data)
    print(f"{len(profiles)} profiles, {len(data)} bytes of JSON -> {dst}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
