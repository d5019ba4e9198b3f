#!/usr/bin/env python3
"""Writes the benchmark layer as qtune IR: an INT4 group-128 asymmetric weight
with a rank-16 LoRA adapter (alpha 32), one function per batch size M.

    layer_model.py OUT.mlir [--n 4096] [--k 4096] [--m 1,16,128,2048,8192] [--loss]
                   [--method lora|peqa|qft]

--method peqa: no adapter, the INT4 weight's scales trainable (with --loss,
qtune-autodiff derives dx and the scale gradient). --method qft: an INT8
group-128 weight whose codes train (compile with --train and
--optimizer-options "optimizer=lion momentum=int8"); x is an input there.

With --loss each function (loss_mM) returns the MSE against a `target` input
and the input x is marked trainable, so qtune-autodiff derives what a layer
inside a model computes in backward: dx (through the frozen quantized weight
and the adapter), dA and dB.
"""
import argparse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--m", default="1,16,128,2048,8192")
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--loss", action="store_true")
    p.add_argument("--method", choices=["lora", "peqa", "qft"], default="lora")
    a = p.parse_args()
    n, k, r, g = a.n, a.k, a.rank, 128
    bits = 8 if a.method == "qft" else 4
    w = f"!qtune.qweight<{n}x{k}, #qtune.uniform<bits = {bits}, group = {g}>>"
    cw = k * bits // 32
    funcs = []
    for m in [int(v) for v in a.m.split(",")]:
        x_role = "trainable" if a.loss and a.method != "qft" else "input"
        name = f"loss_m{m}" if a.loss else f"forward_m{m}"
        target = (f""",\n    %t: tensor<{m}x{n}xbf16> {{qtune.name = "target", qtune.role = #qtune.role<input>}}"""
                  if a.loss else "")
        result = "tensor<f32>" if a.loss else f"""tensor<{m}x{n}xbf16> {{qtune.name = "y"}}"""
        ret = (f"""%l = qtune.mse_loss %o, %t : tensor<{m}x{n}xbf16>, tensor<{m}x{n}xbf16> -> tensor<f32>
  return %l : tensor<f32>""" if a.loss else f"return %o : tensor<{m}x{n}xbf16>")
        codes_role = "trainable" if a.method == "qft" else "frozen"
        scales_role = "trainable" if a.method == "peqa" else "frozen"
        lora = a.method == "lora"
        adapter_args = (f""",
    %a: tensor<{r}x{k}xbf16> {{qtune.name = "lora_A", qtune.role = #qtune.role<trainable>}},
    %b: tensor<{n}x{r}xbf16> {{qtune.name = "lora_B", qtune.role = #qtune.role<trainable>}}"""
                        if lora else "")
        adapter = (f"""
  %d = qtune.lora %x, %a, %b {{alpha = {2.0 * r} : f64, rank = {r} : i64}} : tensor<{m}x{k}xbf16>, tensor<{r}x{k}xbf16>, tensor<{n}x{r}xbf16> -> tensor<{m}x{n}xbf16>
  %o = arith.addf %y, %d : tensor<{m}x{n}xbf16>""" if lora else "")
        y = "%y" if lora else "%o"
        funcs.append(f"""func.func @{name}(
    %x: tensor<{m}x{k}xbf16> {{qtune.name = "x", qtune.role = #qtune.role<{x_role}>}},
    %c: tensor<{n}x{cw}xi32> {{qtune.name = "codes", qtune.role = #qtune.role<{codes_role}>}},
    %s: tensor<{n}x{k // g}xbf16> {{qtune.name = "scales", qtune.role = #qtune.role<{scales_role}>}},
    %z: tensor<{n}x{k // g}xbf16> {{qtune.name = "zeros", qtune.role = #qtune.role<frozen>}}{adapter_args}{target})
    -> ({result}) {{
  %w = qtune.qweight %c, %s, %z : tensor<{n}x{cw}xi32>, tensor<{n}x{k // g}xbf16>, tensor<{n}x{k // g}xbf16> -> {w}
  {y} = qtune.linear %x, %w : tensor<{m}x{k}xbf16>, {w} -> tensor<{m}x{n}xbf16>{adapter}
  {ret}
}}
""")
    with open(a.out, "w") as f:
        f.write("\n".join(funcs))


if __name__ == "__main__":
    main()
