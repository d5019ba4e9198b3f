// Returns an argument without marking it as an in-place update.
func.func @identity(%x: tensor<4xf32> {qtune.name = "x"}) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
