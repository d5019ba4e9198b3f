//===- FormatUtils.cpp - helpers shared by the format definitions ----------===//

#include "qtune/Dialect/QTune/IR/FormatUtils.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "llvm/ADT/APFloat.h"
#include <algorithm>
#include <cmath>

using namespace mlir;

namespace qtune::format {

std::vector<uint32_t> wordsOf(const HostTensor &t) {
  std::vector<uint32_t> words(t.data.size());
  for (size_t i = 0; i < words.size(); ++i) {
    double v = t.data[i];
    if (v < 0)
      v += 4294967296.0;
    words[i] = static_cast<uint32_t>(v);
  }
  return words;
}

HostTensor tensorOfWords(const std::vector<uint32_t> &words,
                         std::vector<int64_t> shape) {
  HostTensor t(std::move(shape));
  for (size_t i = 0; i < words.size(); ++i)
    t.data[i] = words[i];
  return t;
}

double roundTo(double value, Type type, bool roundUp) {
  auto ft = dyn_cast<FloatType>(type);
  if (!ft || ft.isF64() || !std::isfinite(value))
    return value;
  llvm::APFloat f(value);
  bool lost = false;
  f.convert(ft.getFloatSemantics(),
            roundUp ? llvm::APFloat::rmTowardPositive
                    : llvm::APFloat::rmNearestTiesToEven,
            &lost);
  f.convert(llvm::APFloat::IEEEdouble(), llvm::APFloat::rmNearestTiesToEven,
            &lost);
  return f.convertToDouble();
}

LogicalResult verifyGroupDivides(int64_t k, int64_t group, StringRef paramName,
                                 function_ref<InFlightDiagnostic()> emitError) {
  if (group != 0 && k % group != 0)
    return emitError() << paramName << " = " << group
                       << " does not divide K = " << k;
  return success();
}

ComponentSpec codesSpec(MLIRContext *ctx, int64_t n, int64_t k, unsigned bits) {
  return {"codes", ComponentKind::Codes, IntegerType::get(ctx, 32),
          {n, packedWordsPerRow(k, bits)}};
}

uint32_t nearestIndex(ArrayRef<double> table, double x) {
  auto it = std::lower_bound(table.begin(), table.end(), x);
  if (it == table.begin())
    return 0;
  if (it == table.end())
    return table.size() - 1;
  size_t hi = it - table.begin();
  return (x - table[hi - 1] <= table[hi] - x) ? hi - 1 : hi;
}

} // namespace qtune::format

//===----------------------------------------------------------------------===//
// IR emission helpers
//===----------------------------------------------------------------------===//

namespace qtune::format {

Value f32Const(OpBuilder &b, Location loc, double v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(float(v)));
}

Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value groupIndex(OpBuilder &b, Location loc, Value row, Value col,
                 int64_t groupSize, int64_t groups) {
  Value g = arith::DivUIOp::create(b, loc, col, indexConst(b, loc, groupSize));
  Value base = arith::MulIOp::create(b, loc, row, indexConst(b, loc, groups));
  return arith::AddIOp::create(b, loc, base, g);
}

Value codeToF32(OpBuilder &b, Location loc, Value code) {
  // Exact for codes below 2^23: the code as the mantissa of 2^23, minus 2^23.
  // An OR and a subtraction at full rate, where an integer conversion issues
  // at a quarter of it: dequantization in a GEMM's prologue is mostly this.
  Value biased = arith::OrIOp::create(
      b, loc, code, arith::ConstantIntOp::create(b, loc, b.getI32Type(), 0x4B000000));
  return arith::SubFOp::create(
      b, loc, arith::BitcastOp::create(b, loc, b.getF32Type(), biased),
      f32Const(b, loc, 8388608.0));
}

Value selectFromTable(OpBuilder &b, Location loc, Value code,
                      ArrayRef<double> table) {
  assert(llvm::isPowerOf2_64(table.size()) && "a table of 2^bits entries");
  std::vector<Value> level;
  for (double v : table)
    level.push_back(f32Const(b, loc, v));
  for (unsigned bit = 0; level.size() > 1; ++bit) {
    Value one = arith::ConstantIntOp::create(b, loc, b.getI32Type(), 1);
    Value shift = arith::ConstantIntOp::create(b, loc, b.getI32Type(), bit);
    Value set = arith::TruncIOp::create(
        b, loc, b.getI1Type(),
        arith::AndIOp::create(b, loc,
                              arith::ShRUIOp::create(b, loc, code, shift), one));
    std::vector<Value> next;
    for (size_t i = 0; i < level.size(); i += 2)
      next.push_back(
          arith::SelectOp::create(b, loc, set, level[i + 1], level[i]));
    level = std::move(next);
  }
  return level.front();
}

} // namespace qtune::format
