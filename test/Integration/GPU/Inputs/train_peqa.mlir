// Layer-level regression trained by scripts/gpu-check.sh (step "train"): PEQA,
// only the quantization scales of a 4-bit weight train (data from
// make_train_data.py peqa).
!u4 = !qtune.qweight<256x256, #qtune.uniform<bits = 4, group = 64>>
func.func @layer(%x: tensor<64x256xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                 %t: tensor<64x256xbf16> {qtune.name = "target", qtune.role = #qtune.role<input>},
                 %c: tensor<256x32xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                 %s: tensor<256x4xbf16> {qtune.name = "scales", qtune.role = #qtune.role<trainable>},
                 %z: tensor<256x4xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>}) -> tensor<f32> {
  %w = qtune.qweight scale_only %c, %s, %z : tensor<256x32xi32>, tensor<256x4xbf16>, tensor<256x4xbf16> -> !u4
  %y = qtune.linear %x, %w : tensor<64x256xbf16>, !u4 -> tensor<64x256xbf16>
  %l = qtune.mse_loss %y, %t : tensor<64x256xbf16>, tensor<64x256xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
