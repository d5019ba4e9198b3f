#!/usr/bin/env python3
"""Checks quality_study.py corpus's split: every fortune of SRC is in exactly
one of train.txt and valid.txt, and task_*.txt hold exactly the fortunes of
the file `computers`, on the same side.   check_split.py SRC OUT"""
import os
import sys

src, out = sys.argv[1], sys.argv[2]


def pieces(path):
    with open(path, "rb") as f:
        return [p for p in f.read().split(b"\n%\n") if p.strip(b"\n%")]


def fortunes(name):
    return [p.strip(b"\n%") for p in pieces(os.path.join(src, name))]


train, valid = pieces(os.path.join(out, "train.txt")), pieces(os.path.join(out, "valid.txt"))
every = [f for n in sorted(os.listdir(src)) if not n.endswith(".dat") for f in fortunes(n)]
if sorted(train + valid) != sorted(every):
    sys.exit("train + valid is not the corpus")
if not train or not valid:
    sys.exit("one side of the split is empty")
task = set(fortunes("computers"))
task_train = pieces(os.path.join(out, "task_train.txt"))
task_valid = pieces(os.path.join(out, "task_valid.txt"))
if set(task_train) | set(task_valid) != task:
    sys.exit("the task files are not the computers fortunes")
if not set(task_valid) <= set(valid) or not set(task_train) <= set(train):
    sys.exit("a task fortune is on the other side of the split")
print(f"split ok: {len(train)} train, {len(valid)} valid")
