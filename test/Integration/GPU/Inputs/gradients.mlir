// Gradient kernels (input gradients through quantized and dense weights, LoRA
// A/B gradients, PEQA scales, the KL divergence of distillation), checked on the GPU against the reference interpreter by
// scripts/gpu-check.sh (step "gradients"); staged by scripts/gpu-stage.sh.
!u3 = !qtune.qweight<1000x384, #qtune.uniform<bits = 3, group = 128>>
!n4 = !qtune.qweight<1000x384, #qtune.nf4<block = 64, double_quant = true, dq_block = 4>>
func.func @dx_u3(%g: tensor<7x1000xbf16> {qtune.name = "g"}, %c: tensor<1000x36xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                 %s: tensor<1000x3xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                 %z: tensor<1000x3xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>}) -> (tensor<7x384xbf16> {qtune.name = "dx"}) {
  %w = qtune.qweight %c, %s, %z : tensor<1000x36xi32>, tensor<1000x3xbf16>, tensor<1000x3xbf16> -> !u3
  %dx = qtune.linear_t %g, %w : tensor<7x1000xbf16>, !u3 -> tensor<7x384xbf16>
  return %dx : tensor<7x384xbf16>
}
func.func @dx_nf4(%g: tensor<130x1000xbf16> {qtune.name = "g"}, %c: tensor<1000x48xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                  %ac: tensor<1000x2xi32> {qtune.name = "absmax_codes", qtune.role = #qtune.role<frozen>},
                  %as: tensor<1000x2xf32> {qtune.name = "absmax_scales", qtune.role = #qtune.role<frozen>},
                  %ao: tensor<1xf32> {qtune.name = "absmax_offset", qtune.role = #qtune.role<frozen>}) -> (tensor<130x384xbf16> {qtune.name = "dx"}) {
  %w = qtune.qweight %c, %ac, %as, %ao : tensor<1000x48xi32>, tensor<1000x2xi32>, tensor<1000x2xf32>, tensor<1xf32> -> !n4
  %dx = qtune.linear_t %g, %w : tensor<130x1000xbf16>, !n4 -> tensor<130x384xbf16>
  return %dx : tensor<130x384xbf16>
}
func.func @lora_grads(%g: tensor<130x1000xbf16> {qtune.name = "g"}, %x: tensor<130x384xbf16> {qtune.name = "x"},
                      %a: tensor<8x384xbf16> {qtune.name = "A", qtune.role = #qtune.role<frozen>},
                      %b: tensor<1000x8xbf16> {qtune.name = "B", qtune.role = #qtune.role<frozen>})
    -> (tensor<8x384xbf16> {qtune.name = "dA"}, tensor<1000x8xbf16> {qtune.name = "dB"}, tensor<130x384xbf16> {qtune.name = "dx"}) {
  %t = qtune.linear %x, %a : tensor<130x384xbf16>, tensor<8x384xbf16> -> tensor<130x8xbf16>
  %db = qtune.weight_grad %g, %t {scale = 2.0 : f64} : tensor<130x1000xbf16>, tensor<130x8xbf16> -> tensor<1000x8xbf16>
  %dt = qtune.linear_t %g, %b {scale = 2.0 : f64} : tensor<130x1000xbf16>, tensor<1000x8xbf16> -> tensor<130x8xbf16>
  %da = qtune.weight_grad %dt, %x : tensor<130x8xbf16>, tensor<130x384xbf16> -> tensor<8x384xbf16>
  %dx = qtune.linear_t %dt, %a : tensor<130x8xbf16>, tensor<8x384xbf16> -> tensor<130x384xbf16>
  return %da, %db, %dx : tensor<8x384xbf16>, tensor<1000x8xbf16>, tensor<130x384xbf16>
}
!u4 = !qtune.qweight<1000x384, #qtune.uniform<bits = 4, group = 64>>
!l3 = !qtune.qweight<1000x384, #qtune.lut<bits = 3, group = 128>>
func.func @peqa_grads(%g: tensor<130x1000xbf16> {qtune.name = "g"}, %x: tensor<130x384xbf16> {qtune.name = "x"},
                      %c: tensor<1000x48xi32> {qtune.name = "codes", qtune.role = #qtune.role<frozen>},
                      %s: tensor<1000x6xbf16> {qtune.name = "scales", qtune.role = #qtune.role<frozen>},
                      %z: tensor<1000x6xbf16> {qtune.name = "zeros", qtune.role = #qtune.role<frozen>},
                      %c4: tensor<1000x48xi32> {qtune.name = "nf4_codes", qtune.role = #qtune.role<frozen>},
                      %ac: tensor<1000x2xi32> {qtune.name = "absmax_codes", qtune.role = #qtune.role<frozen>},
                      %as: tensor<1000x2xf32> {qtune.name = "absmax_scales", qtune.role = #qtune.role<frozen>},
                      %ao: tensor<1xf32> {qtune.name = "absmax_offset", qtune.role = #qtune.role<frozen>},
                      %c3: tensor<1000x36xi32> {qtune.name = "lut_codes", qtune.role = #qtune.role<frozen>},
                      %t: tensor<1000x3x8xf32> {qtune.name = "table", qtune.role = #qtune.role<frozen>})
    -> (tensor<1000x6xbf16> {qtune.name = "d_scales"}, tensor<1000x6xbf16> {qtune.name = "d_zeros"},
        tensor<1000x2xf32> {qtune.name = "d_absmax_scales"}, tensor<1xf32> {qtune.name = "d_absmax_offset"},
        tensor<1000x3x8xf32> {qtune.name = "d_table"}) {
  %w = qtune.qweight %c, %s, %z : tensor<1000x48xi32>, tensor<1000x6xbf16>, tensor<1000x6xbf16> -> !u4
  %ds = qtune.component_grad %g, %x, %w {component = 1 : i64} : tensor<130x1000xbf16>, tensor<130x384xbf16>, !u4 -> tensor<1000x6xbf16>
  %dz = qtune.component_grad %g, %x, %w {component = 2 : i64} : tensor<130x1000xbf16>, tensor<130x384xbf16>, !u4 -> tensor<1000x6xbf16>
  %v = qtune.qweight %c4, %ac, %as, %ao : tensor<1000x48xi32>, tensor<1000x2xi32>, tensor<1000x2xf32>, tensor<1xf32> -> !n4
  %das = qtune.component_grad %g, %x, %v {component = 2 : i64} : tensor<130x1000xbf16>, tensor<130x384xbf16>, !n4 -> tensor<1000x2xf32>
  %dao = qtune.component_grad %g, %x, %v {component = 3 : i64} : tensor<130x1000xbf16>, tensor<130x384xbf16>, !n4 -> tensor<1xf32>
  %l = qtune.qweight %c3, %t : tensor<1000x36xi32>, tensor<1000x3x8xf32> -> !l3
  %dt = qtune.component_grad %g, %x, %l {component = 1 : i64} : tensor<130x1000xbf16>, tensor<130x384xbf16>, !l3 -> tensor<1000x3x8xf32>
  return %ds, %dz, %das, %dao, %dt : tensor<1000x6xbf16>, tensor<1000x6xbf16>, tensor<1000x2xf32>, tensor<1xf32>, tensor<1000x3x8xf32>
}
func.func @kl_div(%s: tensor<130x1000xbf16> {qtune.name = "student"}, %t: tensor<130x1000xbf16> {qtune.name = "teacher"},
                  %g: tensor<f32> {qtune.name = "g"}) -> (tensor<f32> {qtune.name = "kl"}, tensor<130x1000xbf16> {qtune.name = "dstudent"}) {
  %l = qtune.kl_div %s, %t : tensor<130x1000xbf16>, tensor<130x1000xbf16> -> tensor<f32>
  %d = qtune.kl_div_grad %s, %t, %g : tensor<130x1000xbf16>, tensor<130x1000xbf16>, tensor<f32> -> tensor<130x1000xbf16>
  return %l, %d : tensor<f32>, tensor<130x1000xbf16>
}
