#!/usr/bin/env python3
"""Shows how Python's langdetect 1.0.9 answers on an IFEval response under different seeds.

The official IFEval checker leaves langdetect's DetectorFactory.seed unset, so each run draws
a new seed and borderline responses get different verdicts between runs. ifeval's agreement
test lists such responses with the answers this script prints (system Python with the Debian
package python3-langdetect; `make deps` installs it).

usage: ifeval_langdetect_seeds.py INPUT_DATA.jsonl EVAL_RESULTS.jsonl KEY [KEY...] [--seeds N]
"""
import argparse
import collections
import json

from langdetect import DetectorFactory, detect
from langdetect.lang_detect_exception import LangDetectException


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input_data")
    ap.add_argument("eval_results")
    ap.add_argument("keys", nargs="+", type=int)
    ap.add_argument("--seeds", type=int, default=40)
    a = ap.parse_args()
    key_of = {}
    with open(a.input_data) as f:
        for line in f:
            row = json.loads(line)
            key_of[row["prompt"]] = row["key"]
    with open(a.eval_results) as f:
        for line in f:
            row = json.loads(line)
            key = key_of.get(row["prompt"])
            if key not in a.keys:
                continue
            answers = collections.Counter()
            for seed in range(a.seeds):
                DetectorFactory.seed = seed
                try:
                    answers[detect(row["response"])] += 1
                except LangDetectException:
                    answers["(no features)"] += 1
            print(json.dumps({"key": key, "seeds": a.seeds, "answers": dict(answers.most_common()),
                              "official": dict(zip(row["instruction_id_list"], row["follow_instruction_list"]))}))


if __name__ == "__main__":
    main()
