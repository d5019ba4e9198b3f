func.func @dense(%x: tensor<1x4xf32> {qtune.name = "x"}, %w: tensor<2x4xf32> {qtune.name = "w"}) -> tensor<1x2xf32> {
  %y = qtune.linear %x, %w : tensor<1x4xf32>, tensor<2x4xf32> -> tensor<1x2xf32>
  return %y : tensor<1x2xf32>
}
