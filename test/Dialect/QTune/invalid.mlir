// RUN: qtune-opt %s -split-input-file -verify-diagnostics

// Every diagnostic of the qtune dialect: argument attributes, the qweight type,
// the format attributes and the op verifiers.

//===----------------------------------------------------------------------===//
// Dialect attributes: qtune.role, qtune.name
//===----------------------------------------------------------------------===//

// expected-error @+1 {{'qtune.role' on argument #0 must be #qtune.role<input|frozen|trainable|optimizer_state>, got "trainable"}}
func.func private @role_is_a_string(tensor<4xf32> {qtune.role = "trainable"})

// -----

// expected-error @+1 {{'qtune.role' on argument #1 must be #qtune.role<input|frozen|trainable|optimizer_state>, got #qtune.lut<bits = 3>}}
func.func @role_is_a_format(%a: tensor<4xf32>, %b: tensor<4xf32> {qtune.role = #qtune.lut<bits = 3>}) {
  return
}

// -----

// expected-error @+1 {{'qtune.role' on argument #0 must be #qtune.role<input|frozen|trainable|optimizer_state>, got 2 : i32}}
func.func private @role_is_an_integer(tensor<4xf32> {qtune.role = 2 : i32})

// -----

// expected-error @+2 {{expected ::qtune::Role to be one of: input, frozen, trainable, optimizer_state}}
// expected-error @+1 {{failed to parse QTune_RoleAttr parameter 'value'}}
func.func private @role_unknown_case(tensor<4xf32> {qtune.role = #qtune.role<learned>})

// -----

// expected-error @+1 {{'qtune.name' on argument #2 must be a string, got 7 : i64}}
func.func private @name_not_a_string(tensor<4xf32>, tensor<4xf32>, tensor<4xf32> {qtune.name = 7 : i64})

// -----

// expected-error @+1 {{'qtune.name' on argument #0 must be a string, got @w}}
func.func private @name_is_a_symbol(tensor<4xf32> {qtune.name = @w, qtune.role = #qtune.role<frozen>})

// -----

// The attribute name may be printed quoted ('"qtune.trainable"').
// expected-error-re @+1 {{unknown qtune attribute '{{"?}}qtune.trainable{{"?}}' on argument #0}}
func.func private @unknown_arg_attr(tensor<4xf32> {qtune.trainable})

// -----

// expected-error-re @+1 {{unknown qtune attribute '{{"?}}qtune.role{{"?}}' on an operation}}
func.func private @role_on_an_op() attributes {qtune.role = #qtune.role<input>}

// -----

// expected-error @+1 {{'qtune.name' on result #1 must be a string, got 3 : i64}}
func.func private @result_name_not_a_string(tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32> {qtune.name = 3 : i64})

// -----

// expected-error @+1 {{'qtune.role' applies to arguments, not to result #0}}
func.func private @role_on_a_result(tensor<4xf32>) -> (tensor<4xf32> {qtune.role = #qtune.role<trainable>})

// -----

// expected-error-re @+1 {{unknown qtune attribute '{{"?}}qtune.bogus{{"?}}' on result #0}}
func.func private @unknown_result_attr(tensor<4xf32>) -> (tensor<4xf32> {qtune.bogus = unit})

// -----

func.func @unknown_op_attr(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error-re @+1 {{unknown qtune attribute '{{"?}}qtune.fused{{"?}}' on an operation}}
  %y = arith.addf %x, %x {qtune.fused} : tensor<4xf32>
  return %y : tensor<4xf32>
}

//===----------------------------------------------------------------------===//
// !qtune.qweight
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{qweight shape must be NxK (2 dimensions), got 3}}
func.func private @qweight_rank3(!qtune.qweight<2x4x64, #qtune.nf4<>>)

// -----

// expected-error @+1 {{qweight shape must be NxK (2 dimensions), got 1}}
func.func private @qweight_rank1(!qtune.qweight<64, #qtune.nf4<>>)

// -----

// expected-error @+1 {{qweight dimensions must be positive, got 0x64}}
func.func private @qweight_zero_rows(!qtune.qweight<0x64, #qtune.nf4<>>)

// -----

// expected-error @+1 {{qweight dimensions must be positive, got 4x0}}
func.func private @qweight_zero_cols(!qtune.qweight<4x0, #qtune.lut<bits = 2>>)

// -----

// expected-error @+1 {{expected a quantizer format attribute (one implementing QuantFormatAttrInterface), got #qtune.role<frozen>}}
func.func private @qweight_format_is_a_role(!qtune.qweight<4x64, #qtune.role<frozen>>)

// -----

// expected-error @+1 {{expected a quantizer format attribute (one implementing QuantFormatAttrInterface), got 4 : i64}}
func.func private @qweight_format_is_an_integer(!qtune.qweight<4x64, 4 : i64>)

//===----------------------------------------------------------------------===//
// Format attributes: parameters and verifyShape
//===----------------------------------------------------------------------===//

// -----

// expected-error @+1 {{#qtune.uniform: bits must be 2, 3, 4 or 8, got 5}}
func.func private @uniform_bits_5(!qtune.qweight<4x64, #qtune.uniform<bits = 5>>)

// -----

// expected-error @+1 {{#qtune.uniform: bits must be 2, 3, 4 or 8, got 1}}
func.func private @uniform_bits_1(!qtune.qweight<4x64, #qtune.uniform<bits = 1, group = 32>>)

// -----

// expected-error @+1 {{#qtune.uniform: bits must be 2, 3, 4 or 8, got 16}}
func.func private @uniform_bits_16(!qtune.qweight<4x64, #qtune.uniform<bits = 16>>)

// -----

// expected-error @+1 {{#qtune.uniform: group must be positive (or 0 for per channel), got -32}}
func.func private @uniform_negative_group(!qtune.qweight<4x64, #qtune.uniform<bits = 4, group = -32>>)

// -----

// expected-error @+1 {{#qtune.uniform: scale_type must be a float type, got 'i16'}}
func.func private @uniform_integer_scale_type(!qtune.qweight<4x64, #qtune.uniform<bits = 4, scale_type = i16>>)

// -----

// expected-error @+1 {{#qtune.uniform: scale_type must be a float type, got 'tensor<2xf32>'}}
func.func private @uniform_tensor_scale_type(!qtune.qweight<4x64, #qtune.uniform<bits = 4, scale_type = tensor<2xf32>>>)

// -----

// expected-error @+1 {{#qtune.uniform: group = 48 does not divide K = 64}}
func.func private @uniform_group_does_not_divide(!qtune.qweight<4x64, #qtune.uniform<bits = 4, group = 48>>)

// -----

// expected-error @+1 {{#qtune.uniform: group = 128 does not divide K = 64}}
func.func private @uniform_group_larger_than_k(!qtune.qweight<4x64, #qtune.uniform<bits = 3, group = 128, symmetric = true>>)

// -----

// expected-error @+1 {{#qtune.nf4: block must be positive, got 0}}
func.func private @nf4_zero_block(!qtune.qweight<4x64, #qtune.nf4<block = 0>>)

// -----

// expected-error @+1 {{#qtune.nf4: block must be positive, got -64}}
func.func private @nf4_negative_block(!qtune.qweight<4x64, #qtune.nf4<block = -64>>)

// -----

// expected-error @+1 {{#qtune.nf4: dq_block must be positive, got 0}}
func.func private @nf4_zero_dq_block(!qtune.qweight<4x64, #qtune.nf4<block = 32, double_quant = true, dq_block = 0>>)

// -----

// expected-error @+1 {{#qtune.nf4: dq_block must be positive, got -4}}
func.func private @nf4_negative_dq_block(!qtune.qweight<4x64, #qtune.nf4<dq_block = -4>>)

// -----

// expected-error @+1 {{#qtune.nf4: block = 64 does not divide K = 96}}
func.func private @nf4_block_does_not_divide(!qtune.qweight<4x96, #qtune.nf4<>>)

// -----

// expected-error @+1 {{#qtune.lut: bits must be in [1, 8], got 0}}
func.func private @lut_bits_0(!qtune.qweight<4x64, #qtune.lut<bits = 0>>)

// -----

// expected-error @+1 {{#qtune.lut: bits must be in [1, 8], got 9}}
func.func private @lut_bits_9(!qtune.qweight<4x64, #qtune.lut<bits = 9, group = 32>>)

// -----

// expected-error @+1 {{#qtune.lut: group must be positive (or 0 for one table per tensor), got -1}}
func.func private @lut_negative_group(!qtune.qweight<4x64, #qtune.lut<bits = 4, group = -1>>)

// -----

// expected-error @+1 {{#qtune.lut: group = 40 does not divide K = 100}}
func.func private @lut_group_does_not_divide(!qtune.qweight<4x100, #qtune.lut<bits = 4, group = 40>>)

// -----

// A format attribute that is invalid on its own, outside a qweight type.
// expected-error @+1 {{#qtune.uniform: bits must be 2, 3, 4 or 8, got 6}}
func.func private @format_as_arg_attr(tensor<4xf32> {test.format = #qtune.uniform<bits = 6>})

//===----------------------------------------------------------------------===//
// qtune.qweight
//===----------------------------------------------------------------------===//

// -----

func.func @qweight_too_few_components(%c: tensor<8x4xi32>, %s: tensor<8x2xbf16>) {
  // expected-error @+1 {{'qtune.qweight' op format #qtune.uniform<bits = 2, group = 32> expects 3 components (codes, scales, zeros), got 2}}
  %w = qtune.qweight %c, %s : tensor<8x4xi32>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @qweight_too_many_components(%c: tensor<8x16xi32>, %s: tensor<8x1xf32>, %z: tensor<8x1xf32>) {
  // expected-error @+1 {{'qtune.qweight' op format #qtune.uniform<bits = 4, symmetric = true, scale_type = f32> expects 2 components (codes, scales), got 3}}
  %w = qtune.qweight %c, %s, %z : tensor<8x16xi32>, tensor<8x1xf32>, tensor<8x1xf32>
      -> !qtune.qweight<8x128, #qtune.uniform<bits = 4, symmetric = true, scale_type = f32>>
  return
}

// -----

func.func @qweight_nf4_dq_missing_components(%c: tensor<4x32xi32>, %a: tensor<4x4xf32>) {
  // expected-error @+1 {{expects 4 components (codes, absmax_codes, absmax_scales, absmax_offset), got 2}}
  %w = qtune.qweight %c, %a : tensor<4x32xi32>, tensor<4x4xf32>
      -> !qtune.qweight<4x256, #qtune.nf4<double_quant = true>>
  return
}

// -----

func.func @qweight_no_components() {
  // expected-error @+1 {{expects 2 components (codes, table), got 0}}
  %w = "qtune.qweight"() : () -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
  return
}

// -----

func.func @qweight_codes_not_i32(%c: tensor<8x8xi64>, %s: tensor<8x2xbf16>, %z: tensor<8x2xbf16>) {
  // expected-error @+1 {{'qtune.qweight' op component #0 ('codes') must have element type 'i32', got 'i64'}}
  %w = qtune.qweight %c, %s, %z : tensor<8x8xi64>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 4, group = 32>>
  return
}

// -----

func.func @qweight_scales_wrong_float(%c: tensor<8x8xi32>, %s: tensor<8x2xf32>, %z: tensor<8x2xbf16>) {
  // expected-error @+1 {{'qtune.qweight' op component #1 ('scales') must have element type 'bf16', got 'f32'}}
  %w = qtune.qweight %c, %s, %z : tensor<8x8xi32>, tensor<8x2xf32>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 4, group = 32>>
  return
}

// -----

func.func @qweight_zeros_wrong_float(%c: tensor<8x8xi32>, %s: tensor<8x2xf16>, %z: tensor<8x2xf32>) {
  // expected-error @+1 {{component #2 ('zeros') must have element type 'f16', got 'f32'}}
  %w = qtune.qweight %c, %s, %z : tensor<8x8xi32>, tensor<8x2xf16>, tensor<8x2xf32>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 4, group = 32, scale_type = f16>>
  return
}

// -----

func.func @qweight_nf4_absmax_bf16(%c: tensor<8x16xi32>, %a: tensor<8x2xbf16>) {
  // expected-error @+1 {{component #1 ('absmax') must have element type 'f32', got 'bf16'}}
  %w = qtune.qweight %c, %a : tensor<8x16xi32>, tensor<8x2xbf16>
      -> !qtune.qweight<8x128, #qtune.nf4<>>
  return
}

// -----

func.func @qweight_lut_table_f16(%c: tensor<4x9xi32>, %t: tensor<8xf16>) {
  // expected-error @+1 {{component #1 ('table') must have element type 'f32', got 'f16'}}
  %w = qtune.qweight %c, %t : tensor<4x9xi32>, tensor<8xf16>
      -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
  return
}

// -----

func.func @qweight_codes_unpadded(%c: tensor<3x12xi32>, %s: tensor<3x1xbf16>, %z: tensor<3x1xbf16>) {
  // 100 4-bit codes need ceil(400 / 32) = 13 words per row.
  // expected-error @+1 {{'qtune.qweight' op component #0 ('codes') must have shape 3x13 for a 3x100 weight in #qtune.uniform<bits = 4>, got 3x12}}
  %w = qtune.qweight %c, %s, %z : tensor<3x12xi32>, tensor<3x1xbf16>, tensor<3x1xbf16>
      -> !qtune.qweight<3x100, #qtune.uniform<bits = 4>>
  return
}

// -----

func.func @qweight_codes_3bit_wrong_words(%c: tensor<4x12xi32>, %s: tensor<4x1xbf16>, %z: tensor<4x1xbf16>) {
  // 96 3-bit codes are 9 words, not 96 / 8 = 12.
  // expected-error @+1 {{component #0 ('codes') must have shape 4x9 for a 4x96 weight in #qtune.uniform<bits = 3>, got 4x12}}
  %w = qtune.qweight %c, %s, %z : tensor<4x12xi32>, tensor<4x1xbf16>, tensor<4x1xbf16>
      -> !qtune.qweight<4x96, #qtune.uniform<bits = 3>>
  return
}

// -----

func.func @qweight_scales_wrong_groups(%c: tensor<8x4xi32>, %s: tensor<8x1xbf16>, %z: tensor<8x2xbf16>) {
  // expected-error @+1 {{component #1 ('scales') must have shape 8x2 for a 8x64 weight in #qtune.uniform<bits = 2, group = 32>, got 8x1}}
  %w = qtune.qweight %c, %s, %z : tensor<8x4xi32>, tensor<8x1xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @qweight_zeros_transposed(%c: tensor<8x4xi32>, %s: tensor<8x2xbf16>, %z: tensor<2x8xbf16>) {
  // expected-error @+1 {{component #2 ('zeros') must have shape 8x2 for a 8x64 weight in #qtune.uniform<bits = 2, group = 32>, got 2x8}}
  %w = qtune.qweight %c, %s, %z : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<2x8xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @qweight_dynamic_component(%c: tensor<?x16xi32>, %a: tensor<8x2xf32>) {
  // expected-error @+1 {{component #0 ('codes') must have shape 8x16 for a 8x128 weight in #qtune.nf4<>, got ?x16}}
  %w = qtune.qweight %c, %a : tensor<?x16xi32>, tensor<8x2xf32>
      -> !qtune.qweight<8x128, #qtune.nf4<>>
  return
}

// -----

func.func @qweight_nf4_dq_scales_shape(%c: tensor<4x24xi32>, %ac: tensor<4x2xi32>,
                                       %as: tensor<4x1xf32>, %ao: tensor<1xf32>) {
  // 6 absmax values per row in second-level blocks of 4: ceil(6 / 4) = 2 scales.
  // expected-error @+1 {{component #2 ('absmax_scales') must have shape 4x2 for a 4x192 weight in #qtune.nf4<block = 32, double_quant = true, dq_block = 4>, got 4x1}}
  %w = qtune.qweight %c, %ac, %as, %ao : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x1xf32>, tensor<1xf32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  return
}

// -----

func.func @qweight_nf4_dq_offset_scalar(%c: tensor<4x24xi32>, %ac: tensor<4x2xi32>,
                                        %as: tensor<4x2xf32>, %ao: tensor<f32>) {
  // expected-error @+1 {{component #3 ('absmax_offset') must have shape 1 for a 4x192 weight in #qtune.nf4<block = 32, double_quant = true, dq_block = 4>, got scalar}}
  %w = qtune.qweight %c, %ac, %as, %ao : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<f32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  return
}

// -----

func.func @qweight_lut_group_table_shape(%c: tensor<4x8xi32>, %t: tensor<16xf32>) {
  // expected-error @+1 {{component #1 ('table') must have shape 4x2x16 for a 4x64 weight in #qtune.lut<bits = 4, group = 32>, got 16}}
  %w = qtune.qweight %c, %t : tensor<4x8xi32>, tensor<16xf32>
      -> !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
  return
}

// -----

func.func @qweight_trainable_codes(%c: tensor<8x4xi32> {qtune.role = #qtune.role<trainable>},
                                   %s: tensor<8x2xbf16>, %z: tensor<8x2xbf16>) {
  // expected-error @+1 {{'qtune.qweight' op component #0 ('codes') holds integer codes and cannot come from a trainable argument}}
  %w = qtune.qweight %c, %s, %z : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @qweight_trainable_absmax_codes(%c: tensor<4x24xi32>,
                                          %ac: tensor<4x2xi32> {qtune.role = #qtune.role<trainable>},
                                          %as: tensor<4x2xf32>, %ao: tensor<1xf32>) {
  // expected-error @+1 {{component #1 ('absmax_codes') holds integer codes and cannot come from a trainable argument}}
  %w = qtune.qweight %c, %ac, %as, %ao : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  return
}

// -----

// In a scale-only layer trainable codes are rejected as integer codes (that
// check applies to every layer and comes first).
func.func @scale_only_trainable_codes(%c: tensor<8x4xi32> {qtune.role = #qtune.role<trainable>},
                                      %s: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>},
                                      %z: tensor<8x2xbf16>) {
  // expected-error @+1 {{component #0 ('codes') holds integer codes and cannot come from a trainable argument}}
  %w = qtune.qweight scale_only %c, %s, %z : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @scale_only_trainable_zeros(%c: tensor<8x4xi32> {qtune.role = #qtune.role<frozen>},
                                      %s: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>},
                                      %z: tensor<8x2xbf16> {qtune.role = #qtune.role<trainable>}) {
  // expected-error @+1 {{'qtune.qweight' op scale-only (PEQA) layer: component #2 ('zeros') comes from a trainable argument; only scales may train, codes and zero points stay frozen}}
  %w = qtune.qweight scale_only %c, %s, %z : tensor<8x4xi32>, tensor<8x2xbf16>, tensor<8x2xbf16>
      -> !qtune.qweight<8x64, #qtune.uniform<bits = 2, group = 32>>
  return
}

// -----

func.func @scale_only_trainable_absmax_offset(%c: tensor<4x24xi32>, %ac: tensor<4x2xi32>,
                                              %as: tensor<4x2xf32> {qtune.role = #qtune.role<trainable>},
                                              %ao: tensor<1xf32> {qtune.role = #qtune.role<trainable>}) {
  // expected-error @+1 {{scale-only (PEQA) layer: component #3 ('absmax_offset') comes from a trainable argument}}
  %w = qtune.qweight scale_only %c, %ac, %as, %ao : tensor<4x24xi32>, tensor<4x2xi32>, tensor<4x2xf32>, tensor<1xf32>
      -> !qtune.qweight<4x192, #qtune.nf4<block = 32, double_quant = true, dq_block = 4>>
  return
}

// -----

func.func @scale_only_lut(%c: tensor<4x9xi32>, %t: tensor<8xf32>) {
  // expected-error @+1 {{'qtune.qweight' op scale-only (PEQA) layer needs a format with scale components; #qtune.lut<bits = 3> has none}}
  %w = qtune.qweight scale_only %c, %t : tensor<4x9xi32>, tensor<8xf32>
      -> !qtune.qweight<4x96, #qtune.lut<bits = 3>>
  return
}

// -----

func.func @scale_only_lut_trainable_table(%c: tensor<4x8xi32>,
                                          %t: tensor<4x2x16xf32> {qtune.role = #qtune.role<trainable>}) {
  // expected-error @+1 {{scale-only (PEQA) layer: component #1 ('table') comes from a trainable argument}}
  %w = qtune.qweight scale_only %c, %t : tensor<4x8xi32>, tensor<4x2x16xf32>
      -> !qtune.qweight<4x64, #qtune.lut<bits = 4, group = 32>>
  return
}

// -----

func.func @qweight_result_not_qweight(%c: tensor<4x9xi32>, %t: tensor<8xf32>) {
  // expected-error @+1 {{'qtune.qweight' op result #0 must be A quantized N×K weight in a given format, but got 'tensor<4x96xf32>'}}
  %w = qtune.qweight %c, %t : tensor<4x9xi32>, tensor<8xf32> -> tensor<4x96xf32>
  return
}

//===----------------------------------------------------------------------===//
// qtune.dequant
//===----------------------------------------------------------------------===//

// -----

func.func @dequant_transposed(%w: !qtune.qweight<4x96, #qtune.lut<bits = 3>>) {
  // expected-error @+1 {{'qtune.dequant' op result must have shape 4x96 (the weight's), got 96x4}}
  %d = qtune.dequant %w : !qtune.qweight<4x96, #qtune.lut<bits = 3>> -> tensor<96x4xf32>
  return
}

// -----

func.func @dequant_rank3(%w: !qtune.qweight<8x128, #qtune.nf4<>>) {
  // expected-error @+1 {{'qtune.dequant' op result must have shape 8x128 (the weight's), got 1x8x128}}
  %d = qtune.dequant %w : !qtune.qweight<8x128, #qtune.nf4<>> -> tensor<1x8x128xf32>
  return
}

// -----

func.func @dequant_integer_result(%w: !qtune.qweight<8x128, #qtune.nf4<>>) {
  // expected-error @+1 {{'qtune.dequant' op result #0 must be ranked tensor of floating-point values, but got 'tensor<8x128xi32>'}}
  %d = qtune.dequant %w : !qtune.qweight<8x128, #qtune.nf4<>> -> tensor<8x128xi32>
  return
}

//===----------------------------------------------------------------------===//
// qtune.linear
//===----------------------------------------------------------------------===//

// -----

func.func @linear_k_mismatch_qweight(%x: tensor<8x64xf32>, %w: !qtune.qweight<32x128, #qtune.nf4<>>) {
  // expected-error @+1 {{'qtune.linear' op input (operand #0) has last dimension 64 but the weight is 32x128 (expects K = 128)}}
  %y = qtune.linear %x, %w : tensor<8x64xf32>, !qtune.qweight<32x128, #qtune.nf4<>> -> tensor<8x32xf32>
  return
}

// -----

func.func @linear_k_mismatch_dense(%x: tensor<2x8x64xf32>, %w: tensor<64x32xf32>) {
  // expected-error @+1 {{'qtune.linear' op input (operand #0) has last dimension 64 but the weight is 64x32 (expects K = 32)}}
  %y = qtune.linear %x, %w : tensor<2x8x64xf32>, tensor<64x32xf32> -> tensor<2x8x64xf32>
  return
}

// -----

func.func @linear_scalar_input(%x: tensor<f32>, %w: tensor<4x1xf32>) {
  // expected-error @+1 {{'qtune.linear' op input (operand #0) must have rank >= 1 ([..., K]), got a scalar}}
  %y = qtune.linear %x, %w : tensor<f32>, tensor<4x1xf32> -> tensor<4xf32>
  return
}

// -----

func.func @linear_dense_weight_rank1(%x: tensor<8x64xf32>, %w: tensor<64xf32>) {
  // expected-error @+1 {{'qtune.linear' op dense weight (operand #1) must be NxK (rank 2), got shape 64}}
  %y = qtune.linear %x, %w : tensor<8x64xf32>, tensor<64xf32> -> tensor<8x1xf32>
  return
}

// -----

func.func @linear_dense_weight_rank3(%x: tensor<8x64xf32>, %w: tensor<2x32x64xf32>) {
  // expected-error @+1 {{'qtune.linear' op dense weight (operand #1) must be NxK (rank 2), got shape 2x32x64}}
  %y = qtune.linear %x, %w : tensor<8x64xf32>, tensor<2x32x64xf32> -> tensor<8x32xf32>
  return
}

// -----

func.func @linear_integer_dense_weight(%x: tensor<8x64xf32>, %w: tensor<32x64xi8>) {
  // expected-error @+1 {{'qtune.linear' op operand #1 must be}}
  %y = qtune.linear %x, %w : tensor<8x64xf32>, tensor<32x64xi8> -> tensor<8x32xf32>
  return
}

// -----

func.func @linear_bias_wrong_size(%x: tensor<8x128xf32>, %w: !qtune.qweight<64x128, #qtune.nf4<>>,
                                  %b: tensor<128xf32>) {
  // expected-error @+1 {{'qtune.linear' op bias (operand #2) must have shape 64 (N), got 128}}
  %y = qtune.linear %x, %w, %b : tensor<8x128xf32>, !qtune.qweight<64x128, #qtune.nf4<>>, tensor<128xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @linear_bias_rank2(%x: tensor<8x128xf32>, %w: tensor<64x128xf32>, %b: tensor<1x64xf32>) {
  // expected-error @+1 {{'qtune.linear' op bias (operand #2) must have shape 64 (N), got 1x64}}
  %y = qtune.linear %x, %w, %b : tensor<8x128xf32>, tensor<64x128xf32>, tensor<1x64xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @linear_result_wrong_n(%x: tensor<8x128xf32>, %w: !qtune.qweight<64x128, #qtune.nf4<>>) {
  // expected-error @+1 {{'qtune.linear' op result must have shape 8x64 (the input's leading dimensions, then 64), got 8x128}}
  %y = qtune.linear %x, %w : tensor<8x128xf32>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x128xf32>
  return
}

// -----

func.func @linear_result_wrong_batch(%x: tensor<2x8x128xf32>, %w: tensor<64x128xf32>) {
  // expected-error @+1 {{'qtune.linear' op result must have shape 2x8x64 (the input's leading dimensions, then 64), got 16x64}}
  %y = qtune.linear %x, %w : tensor<2x8x128xf32>, tensor<64x128xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @linear_result_wrong_leading_dim(%x: tensor<2x3x8x128xf32>, %w: tensor<64x128xf32>) {
  // expected-error @+1 {{'qtune.linear' op result must have shape 2x3x8x64 (the input's leading dimensions, then 64), got 2x4x8x64}}
  %y = qtune.linear %x, %w : tensor<2x3x8x128xf32>, tensor<64x128xf32> -> tensor<2x4x8x64xf32>
  return
}

// -----

func.func @linear_result_dynamic_input(%x: tensor<?x128xf32>, %w: tensor<64x128xf32>) {
  // expected-error @+1 {{'qtune.linear' op result must have shape ?x64 (the input's leading dimensions, then 64), got ?x128}}
  %y = qtune.linear %x, %w : tensor<?x128xf32>, tensor<64x128xf32> -> tensor<?x128xf32>
  return
}

// -----

func.func @linear_result_element_type(%x: tensor<8x128xbf16>, %w: !qtune.qweight<64x128, #qtune.nf4<>>) {
  // expected-error @+1 {{'qtune.linear' op result element type must match the input's ('bf16'), got 'f32'}}
  %y = qtune.linear %x, %w : tensor<8x128xbf16>, !qtune.qweight<64x128, #qtune.nf4<>> -> tensor<8x64xf32>
  return
}

//===----------------------------------------------------------------------===//
// qtune.lora
//===----------------------------------------------------------------------===//

// -----

func.func @lora_rank_mismatch_a_b(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x4xf32>) {
  // expected-error @+1 {{'qtune.lora' op rank mismatch between A and B: A is 8x128 (rank 8) but B is 64x4 (expects 64x8)}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x4xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_a_rows(%x: tensor<8x128xf32>, %a: tensor<4x128xf32>, %b: tensor<64x4xf32>) {
  // expected-error @+1 {{'qtune.lora' op A has 4 rows but rank = 8}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<4x128xf32>, tensor<64x4xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_a_transposed(%x: tensor<8x128xf32>, %a: tensor<128x8xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op A has 128 rows but rank = 8}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<128x8xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_k_mismatch(%x: tensor<8x96xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op input (operand #0) has last dimension 96 but A is 8x128 (expects K = 128)}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x96xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_zero_rank(%x: tensor<8x128xf32>, %a: tensor<0x128xf32>, %b: tensor<64x0xf32>) {
  // expected-error @+1 {{'qtune.lora' op rank must be positive, got 0}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 0 : i64}
      : tensor<8x128xf32>, tensor<0x128xf32>, tensor<64x0xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_negative_rank(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op rank must be positive, got -8}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = -8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_infinite_alpha(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op alpha must be finite, got INF}}
  %d = qtune.lora %x, %a, %b {alpha = 0x7FF0000000000000 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_nan_alpha(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op alpha must be finite, got nan}}
  %d = qtune.lora %x, %a, %b {alpha = 0x7FF8000000000000 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_dropout_one(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op dropout must be in [0, 1), got 1.000000e+00}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = 1.0 : f64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_dropout_negative(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op dropout must be in [0, 1), got -2.500000e-01}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = -0.25 : f64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_dropout_nan(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op dropout must be in [0, 1), got nan}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64, dropout = 0x7FF8000000000000 : f64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_scalar_input(%x: tensor<f32>, %a: tensor<8x1xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op input (operand #0) must have rank >= 1 ([..., K]), got a scalar}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<f32>, tensor<8x1xf32>, tensor<64x8xf32> -> tensor<64xf32>
  return
}

// -----

func.func @lora_a_rank3(%x: tensor<8x128xf32>, %a: tensor<1x8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op A must be rank x K (rank 2), got shape 1x8x128}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<1x8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_b_rank1(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64xf32>) {
  // expected-error @+1 {{'qtune.lora' op B must be N x rank (rank 2), got shape 64}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @lora_result_shape(%x: tensor<2x8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op result must have shape 2x8x64 (the input's leading dimensions, then 64), got 2x8x8}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<2x8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<2x8x8xf32>
  return
}

// -----

func.func @lora_result_rank(%x: tensor<2x8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op result must have shape 2x8x64 (the input's leading dimensions, then 64), got 16x64}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<2x8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<16x64xf32>
  return
}

// -----

func.func @lora_result_element_type(%x: tensor<8x128xbf16>, %a: tensor<8x128xbf16>, %b: tensor<64x8xbf16>) {
  // expected-error @+1 {{'qtune.lora' op result element type must match the input's ('bf16'), got 'f16'}}
  %d = qtune.lora %x, %a, %b {alpha = 16.0 : f64, rank = 8 : i64}
      : tensor<8x128xbf16>, tensor<8x128xbf16>, tensor<64x8xbf16> -> tensor<8x64xf16>
  return
}

// -----

func.func @lora_missing_alpha(%x: tensor<8x128xf32>, %a: tensor<8x128xf32>, %b: tensor<64x8xf32>) {
  // expected-error @+1 {{'qtune.lora' op requires attribute 'alpha'}}
  %d = qtune.lora %x, %a, %b {rank = 8 : i64}
      : tensor<8x128xf32>, tensor<8x128xf32>, tensor<64x8xf32> -> tensor<8x64xf32>
  return
}

// -----

func.func @fused_lora_without_attrs(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %a: tensor<2x32xf32>, %b: tensor<16x2xf32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'qtune.fused_linear' op a LoRA term needs lora(A, B) together with lora_alpha and lora_rank (or none of them)}}
  %y = qtune.fused_linear %x, %w lora(%a, %b : tensor<2x32xf32>, tensor<16x2xf32>) : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

func.func @fused_residual_type(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %r: tensor<4x16xbf16>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'qtune.fused_linear' op residual must have the result's type 'tensor<4x16xf32>', got 'tensor<4x16xbf16>'}}
  %y = qtune.fused_linear %x, %w residual(%r : tensor<4x16xbf16>) : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

func.func @fused_lora_rank(%x: tensor<4x32xf32>, %w: tensor<16x32xf32>, %a: tensor<2x32xf32>, %b: tensor<16x4xf32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{'qtune.fused_linear' op rank mismatch between A and B: A is 2x32 (rank 2) but B is 16x4 (expects 16x2)}}
  %y = qtune.fused_linear %x, %w lora(%a, %b : tensor<2x32xf32>, tensor<16x4xf32>) {lora_alpha = 2.0 : f64, lora_rank = 2 : i64} : tensor<4x32xf32>, tensor<16x32xf32> -> tensor<4x16xf32>
  return %y : tensor<4x16xf32>
}

// -----

func.func @component_grad_of_codes(%g: tensor<2x8xf32>, %x: tensor<2x16xf32>, %w: !qtune.qweight<8x16, #qtune.nf4<block = 16>>) -> tensor<8x2xf32> {
  // expected-error @+1 {{'qtune.component_grad' op component 0 ('codes') holds integer codes: it has no gradient}}
  %d = qtune.component_grad %g, %x, %w {component = 0 : i64} : tensor<2x8xf32>, tensor<2x16xf32>, !qtune.qweight<8x16, #qtune.nf4<block = 16>> -> tensor<8x2xf32>
  return %d : tensor<8x2xf32>
}

// -----

func.func @component_grad_shape(%g: tensor<2x8xf32>, %x: tensor<2x16xf32>, %w: !qtune.qweight<8x16, #qtune.nf4<block = 16>>) -> tensor<8x2xf32> {
  // expected-error @+1 {{'qtune.component_grad' op result must have the shape of component 'absmax' (8x1), got 8x2}}
  %d = qtune.component_grad %g, %x, %w {component = 1 : i64} : tensor<2x8xf32>, tensor<2x16xf32>, !qtune.qweight<8x16, #qtune.nf4<block = 16>> -> tensor<8x2xf32>
  return %d : tensor<8x2xf32>
}

// -----

func.func @weight_grad_leading(%g: tensor<2x8xf32>, %x: tensor<3x16xf32>) -> tensor<8x16xf32> {
  // expected-error @+1 {{'qtune.weight_grad' op gradient 2x8 and input 3x16 must share their leading dimensions}}
  %d = qtune.weight_grad %g, %x : tensor<2x8xf32>, tensor<3x16xf32> -> tensor<8x16xf32>
  return %d : tensor<8x16xf32>
}

// -----

func.func @linear_t_n(%g: tensor<2x9xf32>, %w: tensor<8x16xf32>) -> tensor<2x16xf32> {
  // expected-error @+1 {{'qtune.linear_t' op gradient (operand #0) must be [..., N] with N = 8, got shape 2x9}}
  %d = qtune.linear_t %g, %w : tensor<2x9xf32>, tensor<8x16xf32> -> tensor<2x16xf32>
  return %d : tensor<2x16xf32>
}

// -----

func.func @mse_shapes(%p: tensor<2x8xf32>, %t: tensor<8x2xf32>) -> tensor<f32> {
  // expected-error @+1 {{'qtune.mse_loss' op prediction and target must have the same shape, got 2x8 and 8x2}}
  %l = qtune.mse_loss %p, %t : tensor<2x8xf32>, tensor<8x2xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

func.func @schedule_shape(%x: tensor<2x64xbf16>, %w: tensor<64x64xbf16>) -> tensor<2x64xbf16> {
  // expected-error-re @+1 {{'qtune.schedule' must be array<i64: tileM, tileN, tileK, warpsM, warpsN> of positive values, got array<i64: 16, 32>}}
  %y = qtune.linear %x, %w {qtune.schedule = array<i64: 16, 32>} : tensor<2x64xbf16>, tensor<64x64xbf16> -> tensor<2x64xbf16>
  return %y : tensor<2x64xbf16>
}

// -----

func.func @schedule_on_lora(%x: tensor<2x64xf32>, %a: tensor<4x64xf32>, %b: tensor<8x4xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{'qtune.schedule' applies to qtune.linear and qtune.fused_linear only}}
  %y = qtune.lora %x, %a, %b {alpha = 4.0 : f64, rank = 4 : i64, qtune.schedule = array<i64: 16, 32, 32, 1, 2>} : tensor<2x64xf32>, tensor<4x64xf32>, tensor<8x4xf32> -> tensor<2x8xf32>
  return %y : tensor<2x8xf32>
}

// -----

func.func @cross_entropy_labels(%l: tensor<2x3x5xf32>, %y: tensor<3x2xi32>) -> tensor<f32> {
  // expected-error @+1 {{'qtune.cross_entropy' op labels must have the logits' leading dimensions (2x3), got 3x2}}
  %c = qtune.cross_entropy %l, %y : tensor<2x3x5xf32>, tensor<3x2xi32> -> tensor<f32>
  return %c : tensor<f32>
}

// -----

func.func @kl_div_shapes(%s: tensor<2x3x5xf32>, %t: tensor<2x3x4xf32>) -> tensor<f32> {
  // expected-error @+1 {{'qtune.kl_div' op student and teacher logits must have one shape [..., V], got 2x3x5 and 2x3x4}}
  %k = qtune.kl_div %s, %t : tensor<2x3x5xf32>, tensor<2x3x4xf32> -> tensor<f32>
  return %k : tensor<f32>
}

// -----

func.func @adamw_moment_type(%p: tensor<4xf32>, %m: tensor<4xbf16>, %v: tensor<4xf32>, %s: tensor<f32>) -> tensor<4xf32> {
  // expected-error @+1 {{'qtune.adamw' op AdamW moments m and v must be f32}}
  %np, %nm, %nv = qtune.adamw %p, %p, %m, %v, %s, %s : tensor<4xf32>, tensor<4xf32>, tensor<4xbf16>, tensor<4xf32>, tensor<f32>, tensor<f32>
  return %np : tensor<4xf32>
}

// -----

func.func @lion_format(%p: tensor<4xf32>, %m: tensor<4xbf16>, %s: tensor<f32>) -> tensor<4xf32> {
  // expected-error @+1 {{'qtune.lion' op momentum stored as int8 needs element type i8, got 'bf16'}}
  %np, %nm = qtune.lion %p, %p, %m, %s {momentum = #qtune.state<int8>} : tensor<4xf32>, tensor<4xf32>, tensor<4xbf16>, tensor<f32> -> tensor<4xf32>, tensor<4xbf16>
  return %np : tensor<4xf32>
}

// -----

func.func @lion_scales(%p: tensor<300xf32>, %m: tensor<300xi8>, %sc: tensor<1xf32>, %s: tensor<f32>) -> tensor<300xf32> {
  // expected-error @+1 {{'qtune.lion' op int8 momentum scales must be tensor<2xf32> (one per 256 elements), got 'tensor<1xf32>'}}
  %np, %nm, %ns = qtune.lion %p, %p, %m scales(%sc : tensor<1xf32>), %s {momentum = #qtune.state<int8>} : tensor<300xf32>, tensor<300xf32>, tensor<300xi8>, tensor<f32> -> tensor<300xf32>, tensor<300xi8>, tensor<1xf32>
  return %np : tensor<300xf32>
}

// -----

func.func @clip_norm(%g: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'qtune.clip_grad_norm' op max_norm must be positive, got 0}}
  %r = qtune.clip_grad_norm %g {max_norm = 0.0 : f64} : tensor<4xf32> -> tensor<4xf32>
  return %r : tensor<4xf32>
}

// -----

// expected-error @+1 {{'qtune.updates' on result #0 must be the index of an argument}}
func.func @updates_index(%p: tensor<4xf32>) -> (tensor<4xf32> {qtune.updates = 3 : i64}) {
  return %p : tensor<4xf32>
}

// -----

func.func @qft_not_8bit(%g: tensor<4x16xbf16>, %x: tensor<4x32xbf16>, %c: tensor<16x4xi32>,
                        %s: tensor<16x1xbf16>, %m: tensor<16x32xi8>, %ms: tensor<16xf32>, %lr: tensor<f32>) {
  // expected-error @+1 {{'qtune.qft_lion' op QFT trains 8-bit uniform codes, got #qtune.uniform<bits = 4, symmetric = true>}}
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<16x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 4, symmetric = true>, block = 32 : i64}
      : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x4xi32>, tensor<16x32xi8>, tensor<16xf32>, tensor<f32>
      -> tensor<16x4xi32>, tensor<16x32xi8>, tensor<16xf32>
  return
}

// -----

func.func @qft_block(%g: tensor<4x16xbf16>, %x: tensor<4x32xbf16>, %c: tensor<16x8xi32>,
                     %s: tensor<16x1xbf16>, %m: tensor<16x32xi8>, %ms: tensor<16xf32>, %lr: tensor<f32>) {
  // expected-error @+1 {{momentum block 24 must divide K = 32 (blocks stay within a row)}}
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<16x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true>, block = 24 : i64}
      : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>, tensor<f32>
      -> tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>
  return
}

// -----

func.func @qft_momentum_scales(%g: tensor<4x16xbf16>, %x: tensor<4x32xbf16>, %c: tensor<16x8xi32>,
                               %s: tensor<16x1xbf16>, %m: tensor<16x32xi8>, %ms: tensor<8xf32>, %lr: tensor<f32>) {
  // expected-error @+1 {{momentum scales must be tensor<16xf32> (one per 32 elements), got 'tensor<8xf32>'}}
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<16x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8, symmetric = true>, block = 32 : i64}
      : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x8xi32>, tensor<16x32xi8>, tensor<8xf32>, tensor<f32>
      -> tensor<16x8xi32>, tensor<16x32xi8>, tensor<8xf32>
  return
}

// -----

func.func @qft_missing_zeros(%g: tensor<4x16xbf16>, %x: tensor<4x32xbf16>, %c: tensor<16x8xi32>,
                             %s: tensor<16x1xbf16>, %m: tensor<16x32xi8>, %ms: tensor<16xf32>, %lr: tensor<f32>) {
  // expected-error @+1 {{format #qtune.uniform<bits = 8> has 3 components; got codes and 1 params}}
  %nc, %nm, %ns = qtune.qft_lion %g, %x, %c, params(%s : tensor<16x1xbf16>), %m, %ms, %lr
      {format = #qtune.uniform<bits = 8>, block = 32 : i64}
      : tensor<4x16xbf16>, tensor<4x32xbf16>, tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>, tensor<f32>
      -> tensor<16x8xi32>, tensor<16x32xi8>, tensor<16xf32>
  return
}

// -----

//===----------------------------------------------------------------------===//
// Decoder ops
//===----------------------------------------------------------------------===//

func.func @embedding_wrong_width(%t: tensor<16x8xbf16>, %ids: tensor<4xi32>) {
  // expected-error @+1 {{'qtune.embedding' op result must be 4x8 of 'bf16' (the ids' shape, then the table's D), got 'tensor<4x6xbf16>'}}
  %h = qtune.embedding %t, %ids : tensor<16x8xbf16>, tensor<4xi32> -> tensor<4x6xbf16>
  return
}

// -----

func.func @rms_norm_weight_length(%x: tensor<4x8xf32>, %w: tensor<6xf32>) {
  // expected-error @+1 {{'qtune.rms_norm' op weight must be [8] (the input's last dimension), got 6}}
  %y = qtune.rms_norm %x, %w : tensor<4x8xf32>, tensor<6xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @rms_norm_eps(%x: tensor<4x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'qtune.rms_norm' op eps must be positive, got 0}}
  %y = qtune.rms_norm %x, %w {eps = 0.0 : f64} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>
  return
}

// -----

func.func @rope_odd_head_dim(%x: tensor<2x4x9xf32>) {
  // expected-error @+1 {{'qtune.rope' op head_dim must be positive and even, got 3}}
  %y = qtune.rope %x {head_dim = 3 : i64} : tensor<2x4x9xf32>
  return
}

// -----

func.func @rope_heads_do_not_divide(%x: tensor<2x4x10xf32>) {
  // expected-error @+1 {{'qtune.rope' op the last dimension (10) must be a multiple of head_dim (4)}}
  %y = qtune.rope %x {head_dim = 4 : i64} : tensor<2x4x10xf32>
  return
}

// -----

func.func @attention_kv_heads(%q: tensor<2x4x12xf32>, %k: tensor<2x4x8xf32>) {
  // expected-error @+1 {{'qtune.attention' op heads (3) must be a positive multiple of kv_heads (2)}}
  %o, %l = qtune.attention %q, %k, %k {heads = 3 : i64, kv_heads = 2 : i64} : tensor<2x4x12xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32> -> tensor<2x4x12xf32>, tensor<2x3x4xf32>
  return
}

// -----

func.func @attention_key_shape(%q: tensor<2x4x8xf32>, %k: tensor<2x4x8xf32>, %v: tensor<2x4x4xf32>) {
  // expected-error @+1 {{'qtune.attention' op key must be 2x4x4 of 'f32' (kv_heads x head_dim = 1 x 4), got 'tensor<2x4x8xf32>'}}
  %o, %l = qtune.attention %q, %k, %v {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x4xf32> -> tensor<2x4x8xf32>, tensor<2x2x4xf32>
  return
}

// -----

func.func @attention_lse_shape(%q: tensor<2x4x8xf32>, %k: tensor<2x4x4xf32>) {
  // expected-error @+1 {{'qtune.attention' op lse must be 2x2x4 ([..., heads, S]), got 2x4x2}}
  %o, %l = qtune.attention %q, %k, %k {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32> -> tensor<2x4x8xf32>, tensor<2x4x2xf32>
  return
}

// -----

func.func @attention_segments_shape(%q: tensor<2x4x8xf32>, %k: tensor<2x4x4xf32>, %seg: tensor<2x5xi32>) {
  // expected-error @+1 {{'qtune.attention' op segments must be 2x4 of i32 (one id per position), got 'tensor<2x5xi32>'}}
  %o, %l = qtune.attention %q, %k, %k segments %seg {heads = 2 : i64, kv_heads = 1 : i64} : tensor<2x4x8xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32>, tensor<2x5xi32> -> tensor<2x4x8xf32>, tensor<2x2x4xf32>
  return
}

// -----

func.func @attention_grad_segments_shape(%q: tensor<2x4x8xf32>, %k: tensor<2x4x4xf32>, %l: tensor<2x2x4xf32>, %seg: tensor<4xi32>) {
  // expected-error @+1 {{'qtune.attention_grad' op segments must be 2x4 of i32 (one id per position), got 'tensor<4xi32>'}}
  %dq, %dk, %dv = qtune.attention_grad %q, %k, %k, %q, %l, %q segments %seg {heads = 2 : i64, kv_heads = 1 : i64, scale = 0.5 : f64, causal = true} : tensor<2x4x8xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32>, tensor<2x4x8xf32>, tensor<2x2x4xf32>, tensor<2x4x8xf32>, tensor<4xi32> -> tensor<2x4x8xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32>
  return
}

// -----

func.func @tensor_map_swizzle(%x: memref<?xbf16>) -> i64 {
  // expected-error @+1 {{'qtune.tensor_map' op swizzle must be 0, 32, 64 or 128 bytes, got 48}}
  %m = qtune.tensor_map %x {rows = 64 : i64, cols = 64 : i64, box_rows = 64 : i64, box_cols = 64 : i64, swizzle = 48 : i64} : memref<?xbf16>
  return %m : i64
}

// -----

func.func @tensor_map_box_row(%x: memref<?xbf16>) -> i64 {
  // expected-error @+1 {{'qtune.tensor_map' op a box row of 256 bytes does not fit the 128-byte swizzle}}
  %m = qtune.tensor_map %x {rows = 64 : i64, cols = 256 : i64, box_rows = 64 : i64, box_cols = 128 : i64, swizzle = 128 : i64} : memref<?xbf16>
  return %m : i64
}

// -----

func.func @tensor_map_box(%x: memref<?xbf16>) -> i64 {
  // expected-error @+1 {{'qtune.tensor_map' op box 512 x 64 must have 1 to 256 rows and a multiple of 8 columns up to 256}}
  %m = qtune.tensor_map %x {rows = 1024 : i64, cols = 64 : i64, box_rows = 512 : i64, box_cols = 64 : i64, swizzle = 128 : i64} : memref<?xbf16>
  return %m : i64
}

// -----

func.func @tensor_map_extent(%x: memref<1000xbf16>) -> i64 {
  // expected-error @+1 {{'qtune.tensor_map' op a 16 x 64 matrix does not fit the 1000-element buffer}}
  %m = qtune.tensor_map %x {rows = 16 : i64, cols = 64 : i64, box_rows = 16 : i64, box_cols = 64 : i64, swizzle = 128 : i64} : memref<1000xbf16>
  return %m : i64
}
