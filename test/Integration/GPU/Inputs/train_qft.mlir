// Layer-level regression trained by scripts/gpu-check.sh (step "train"): QFT,
// the 8-bit codes of a per-channel symmetric weight train in place with Lion
// and int8 momentum (data from make_train_data.py qft).
!q8 = !qtune.qweight<256x256, #qtune.uniform<bits = 8, group = 0, symmetric = true>>
func.func @layer(%x: tensor<64x256xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                 %t: tensor<64x256xbf16> {qtune.name = "target", qtune.role = #qtune.role<input>},
                 %c: tensor<256x64xi32> {qtune.name = "codes", qtune.role = #qtune.role<trainable>},
                 %s: tensor<256x1xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s : tensor<256x64xi32>, tensor<256x1xbf16> -> !q8
  %y = qtune.linear %x, %w : tensor<64x256xbf16>, !q8 -> tensor<64x256xbf16>
  %l = qtune.mse_loss %y, %t : tensor<64x256xbf16>, tensor<64x256xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
