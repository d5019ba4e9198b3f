// Layer-level classifier trained by scripts/gpu-check.sh (step "train"): a
// frozen 4-bit weight plus a LoRA adapter, cross entropy against the labels a
// teacher assigns (data from make_train_data.py ce).
!u4 = !qtune.qweight<256x256, #qtune.uniform<bits = 4, group = 64>>
func.func @layer(%x: tensor<64x256xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                 %labels: tensor<64xi32> {qtune.name = "labels", qtune.role = #qtune.role<input>},
                 %c: tensor<256x32xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                 %s: tensor<256x4xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                 %z: tensor<256x4xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                 %a: tensor<8x256xbf16> {qtune.name = "lora_A", qtune.role = #qtune.role<trainable>},
                 %b: tensor<256x8xbf16> {qtune.name = "lora_B", qtune.role = #qtune.role<trainable>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s, %z : tensor<256x32xi32>, tensor<256x4xbf16>, tensor<256x4xbf16> -> !u4
  %y = qtune.linear %x, %w : tensor<64x256xbf16>, !u4 -> tensor<64x256xbf16>
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64} : tensor<64x256xbf16>, tensor<8x256xbf16>, tensor<256x8xbf16> -> tensor<64x256xbf16>
  %o = arith.addf %y, %d : tensor<64x256xbf16>
  %l = qtune.cross_entropy %o, %labels : tensor<64x256xbf16>, tensor<64xi32> -> tensor<f32>
  return %l : tensor<f32>
}
