func.func @f(%x: tensor<2x16xf32>, %a: tensor<4x16xf32>, %b: tensor<8x2xf32>) -> tensor<2x8xf32> {
  %y = qtune.lora %x, %a, %b {alpha = 8.0 : f64, rank = 4 : i64} : tensor<2x16xf32>, tensor<4x16xf32>, tensor<8x2xf32> -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}
