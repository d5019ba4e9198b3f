// A QFT layer: the 8-bit codes are trainable.
!q8 = !qtune.qweight<64x128, #qtune.uniform<bits = 8, group = 0, symmetric = true>>
func.func @loss(%x: tensor<4x128xbf16> {qtune.name = "x", qtune.role = #qtune.role<input>},
                %c: tensor<64x32xi32> {qtune.name = "codes", qtune.role = #qtune.role<trainable>},
                %s: tensor<64x1xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                %t: tensor<4x64xbf16> {qtune.name = "t", qtune.role = #qtune.role<input>}) -> tensor<f32> {
  %w = qtune.qweight %c, %s : tensor<64x32xi32>, tensor<64x1xbf16> -> !q8
  %y = qtune.linear %x, %w : tensor<4x128xbf16>, !q8 -> tensor<4x64xbf16>
  %l = qtune.mse_loss %y, %t : tensor<4x64xbf16>, tensor<4x64xbf16> -> tensor<f32>
  return %l : tensor<f32>
}
