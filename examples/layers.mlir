// Example quantized layers, one per method qtune implements. Run them with
//   scripts/demo.sh
// or one at a time:
//   build/bin/qtune-interp examples/layers.mlir --entry qlora_nf4 --random-inputs 1 --print

// QLoRA: an NF4 weight (absmax per 64-block, double-quantized absmax) plus a
// rank-8 LoRA adapter. Only A and B train.
!nf4 = !qtune.qweight<96x256, #qtune.nf4<block = 64, double_quant = true, dq_block = 2>>
func.func @qlora_nf4(
    %x: tensor<2x4x256xbf16> {qtune.role = #qtune.role<input>, qtune.name = "x"},
    %codes: tensor<96x32xi32> {qtune.role = #qtune.role<frozen>},
    %absmax_codes: tensor<96x1xi32> {qtune.role = #qtune.role<frozen>},
    %absmax_scales: tensor<96x2xf32> {qtune.role = #qtune.role<frozen>},
    %absmax_offset: tensor<1xf32> {qtune.role = #qtune.role<frozen>},
    %a: tensor<8x256xbf16> {qtune.role = #qtune.role<trainable>, qtune.name = "lora_A"},
    %b: tensor<96x8xbf16> {qtune.role = #qtune.role<trainable>, qtune.name = "lora_B"})
    -> (tensor<2x4x96xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight %codes, %absmax_codes, %absmax_scales, %absmax_offset
      : tensor<96x32xi32>, tensor<96x1xi32>, tensor<96x2xf32>, tensor<1xf32> -> !nf4
  %y = qtune.linear %x, %w : tensor<2x4x256xbf16>, !nf4 -> tensor<2x4x96xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = 0.05 : f64}
      : tensor<2x4x256xbf16>, tensor<8x256xbf16>, tensor<96x8xbf16> -> tensor<2x4x96xbf16>
  %r = arith.addf %y, %d : tensor<2x4x96xbf16>
  return %r : tensor<2x4x96xbf16>
}

// PEQA: a 4-bit asymmetric weight whose per-group scales are the only trainable
// parameters (a task is a set of scales); codes and zero points stay frozen.
!u4 = !qtune.qweight<64x128, #qtune.uniform<bits = 4, group = 32>>
func.func @peqa_int4(
    %x: tensor<8x128xbf16> {qtune.role = #qtune.role<input>, qtune.name = "x"},
    %codes: tensor<64x16xi32> {qtune.role = #qtune.role<frozen>},
    %scales: tensor<64x4xbf16> {qtune.role = #qtune.role<trainable>, qtune.name = "scales"},
    %zeros: tensor<64x4xbf16> {qtune.role = #qtune.role<frozen>},
    %bias: tensor<64xbf16> {qtune.role = #qtune.role<frozen>})
    -> (tensor<8x64xbf16> {qtune.name = "y"}) {
  %w = qtune.qweight scale_only %codes, %scales, %zeros
      : tensor<64x16xi32>, tensor<64x4xbf16>, tensor<64x4xbf16> -> !u4
  %y = qtune.linear %x, %w, %bias : tensor<8x128xbf16>, !u4, tensor<64xbf16> -> tensor<8x64xbf16>
  return %y : tensor<8x64xbf16>
}

// INT2 with low-rank error correction (LREC): a 2-bit symmetric per-channel
// weight (K = 100 is not a multiple of 16: rows are padded to whole words)
// corrected by a LoRA adapter; and a 3-bit codebook weight, one table per row.
!u2 = !qtune.qweight<32x100, #qtune.uniform<bits = 2, symmetric = true>>
!l3 = !qtune.qweight<32x100, #qtune.lut<bits = 3, group = 100>>
func.func @int2_lrec_and_lut3(
    %x: tensor<3x100xbf16> {qtune.role = #qtune.role<input>, qtune.name = "x"},
    %codes2: tensor<32x7xi32> {qtune.role = #qtune.role<frozen>},
    %scales2: tensor<32x1xbf16> {qtune.role = #qtune.role<frozen>},
    %a: tensor<4x100xbf16> {qtune.role = #qtune.role<trainable>},
    %b: tensor<32x4xbf16> {qtune.role = #qtune.role<trainable>},
    %codes3: tensor<32x10xi32> {qtune.role = #qtune.role<frozen>},
    %table: tensor<32x1x8xf32> {qtune.role = #qtune.role<frozen>})
    -> (tensor<3x32xbf16> {qtune.name = "int2_lrec"}, tensor<3x32xbf16> {qtune.name = "lut3"}) {
  %w2 = qtune.qweight %codes2, %scales2 : tensor<32x7xi32>, tensor<32x1xbf16> -> !u2
  %y2 = qtune.linear %x, %w2 : tensor<3x100xbf16>, !u2 -> tensor<3x32xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 8.0 : f64, rank = 4 : i64}
      : tensor<3x100xbf16>, tensor<4x100xbf16>, tensor<32x4xbf16> -> tensor<3x32xbf16>
  %r = arith.addf %y2, %d : tensor<3x32xbf16>
  %w3 = qtune.qweight %codes3, %table : tensor<32x10xi32>, tensor<32x1x8xf32> -> !l3
  %y3 = qtune.linear %x, %w3 : tensor<3x100xbf16>, !l3 -> tensor<3x32xbf16>
  return %r, %y3 : tensor<3x32xbf16>, tensor<3x32xbf16>
}
