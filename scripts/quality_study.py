#!/usr/bin/env python3
"""Data and report helpers of scripts/quality-study.sh (no third-party modules).

  quality_study.py corpus SRC_DIR OUT_DIR
      The fortunes corpus: every fortune of the files in SRC_DIR (Debian's
      `fortunes` package, /usr/share/games/fortunes), each followed by its
      "%" separator line; a fortune goes to valid.txt when the CRC-32 of its
      text is 0 mod 20 (a fixed 5 % hold-out, independent of file order),
      else to train.txt. Byte tokens: the files are read as bytes. The
      fortunes of the file `computers` are also written, split the same way,
      to task_train.txt and task_valid.txt (the task of the stacking runs).
  quality_study.py calib TRAIN_TXT OUT N S
      N calibration sequences of S byte tokens, evenly spaced over the training
      text: input_ids I32 [N, S] (for qtune-quantize --calib).
  quality_study.py subset SRC REF OUT
      The tensors of SRC that REF also holds (a checkpoint's weights without
      its optimizer states), written to OUT.
  quality_study.py minus SRC BASE
      Rewrites SRC without the tensors BASE holds too (an LREC variant's
      teacher weights and shared embeddings are the base model's: they travel
      once); each such tensor must be byte-identical in both.
  quality_study.py report DIR ROWS TABLE
      A results table (markdown, DIR/TABLE) from DIR/results/*.json (one
      qtune-run eval --json line each) and DIR/ROWS (the rows' keys and
      labels; the first row is the full-precision reference).
"""
import json
import math
import os
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qtune_tensors import st_write  # noqa: E402


# The fine-tuning task of the stacking experiment: one file's fortunes (its
# share of the split above, so the task's held-out text is never trained on).
TASK = "computers"


def fail(msg):
    sys.exit("quality_study.py: error: " + msg)


def corpus(src, out):
    if not os.path.isdir(src):
        fail(f"{src}: no such directory (install Debian's 'fortunes' package)")
    names = sorted(n for n in os.listdir(src)
                   if not n.endswith((".dat", ".u8"))
                   and os.path.isfile(os.path.join(src, n))
                   and not os.path.islink(os.path.join(src, n)))
    if not names:
        fail(f"{src}: no fortune files")
    train, valid = [], []
    task_train, task_valid = [], []
    count = 0
    for n in names:
        with open(os.path.join(src, n), "rb") as f:
            text = f.read()
        # A fortune ends at a line holding only '%'.
        for fortune in text.split(b"\n%\n"):
            fortune = fortune.strip(b"\n%")
            if not fortune:
                continue
            count += 1
            piece = fortune + b"\n%\n"
            held_out = zlib.crc32(fortune) % 20 == 0
            (valid if held_out else train).append(piece)
            if n == TASK:
                (task_valid if held_out else task_train).append(piece)
    os.makedirs(out, exist_ok=True)
    for name, parts in (("train.txt", train), ("valid.txt", valid),
                        ("task_train.txt", task_train), ("task_valid.txt", task_valid)):
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(parts))
    print(f"corpus: {count} fortunes from {len(names)} files: "
          f"train {sum(map(len, train))} bytes ({len(train)}), "
          f"valid {sum(map(len, valid))} bytes ({len(valid)}); task '{TASK}': "
          f"train {sum(map(len, task_train))} bytes, valid {sum(map(len, task_valid))} bytes")


def calib(train_txt, out, n, s):
    with open(train_txt, "rb") as f:
        data = f.read()
    if len(data) < n * s:
        fail(f"{train_txt}: {len(data)} bytes cannot give {n} sequences of {s}")
    stride = (len(data) - s) // max(n - 1, 1)
    ids = []
    for i in range(n):
        ids.extend(data[i * stride:i * stride + s])
    st_write(out, {"input_ids": ("I32", [n, s], struct.pack("<%di" % len(ids), *ids))})
    print(f"calibration: {n} x {s} tokens of {train_txt} -> {out}")


def subset(src, ref, out):
    from qtune_tensors import st_read
    a, names = st_read(src), st_read(ref).keys()
    missing = sorted(set(names) - set(a))
    if missing:
        fail(f"{src} lacks {len(missing)} tensors of {ref} ({missing[0]}, ...)")
    st_write(out, {n: a[n] for n in names})
    print(f"{out}: {len(names)} tensors of {src}")


def minus(src, base):
    from qtune_tensors import st_read
    a, b = st_read(src), st_read(base)
    shared = sorted(set(a) & set(b))
    for n in shared:
        if a[n] != b[n]:
            fail(f"{src}: tensor '{n}' differs from {base}'s")
    st_write(src, {n: t for n, t in a.items() if n not in b})
    print(f"{src}: {len(a) - len(shared)} tensors kept, {len(shared)} shared with {base} dropped")


def report(d, rows_file, table_file):
    rows = []
    with open(os.path.join(d, rows_file)) as f:
        for line in f:
            line = line.rstrip("\n")
            if line and not line.startswith("#"):
                key, label = line.split(" ", 1)
                rows.append((key, label))
    res = {}
    for key, _ in rows:
        p = os.path.join(d, "results", key + ".json")
        if os.path.exists(p):
            with open(p) as f:
                res[key] = json.loads(f.read().strip().splitlines()[-1])
    ref = rows[0][0]
    if ref not in res:
        fail(f"{d}/results/{ref}.json is missing: run the tune stage first")
    fp = res[ref]["loss"]
    gap = ref == "fp"  # the main table: the gap each method closes
    out = ["| model | held-out loss (nats/byte) | bits/byte | perplexity |"
           + (" gap to fp closed (vs. RTN, same bits) |" if gap else ""),
           "|---|---:|---:|---:|" + ("---:|" if gap else "")]
    for key, label in rows:
        if key not in res:
            out.append(f"| {label} | not run | | |" + (" |" if gap else ""))
            continue
        loss = res[key]["loss"]
        line = f"| {label} | {loss:.4f} | {loss / math.log(2):.3f} | {math.exp(loss):.3f} |"
        if gap:
            # The gap that round-to-nearest at the same bit width opens, and
            # the fraction of it this variant removes.
            rtn = res.get(key.split("_")[0] + "_rtn", {}).get("loss")
            closed = ""
            if rtn is not None and not key.endswith("_rtn") and rtn - fp > 1e-3:
                closed = f"{100.0 * (rtn - loss) / (rtn - fp):.1f} %"
            line += f" {closed} |"
        out.append(line)
    table = "\n".join(out) + "\n"
    with open(os.path.join(d, table_file), "w") as f:
        f.write(table)
    sys.stdout.write(table)


def main(argv):
    if len(argv) >= 3 and argv[0] == "corpus":
        corpus(argv[1], argv[2])
    elif len(argv) == 5 and argv[0] == "calib":
        calib(argv[1], argv[2], int(argv[3]), int(argv[4]))
    elif len(argv) == 4 and argv[0] == "subset":
        subset(argv[1], argv[2], argv[3])
    elif len(argv) == 3 and argv[0] == "minus":
        minus(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "report":
        report(argv[1], argv[2], argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
