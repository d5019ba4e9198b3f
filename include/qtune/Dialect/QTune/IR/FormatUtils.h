//===- FormatUtils.h - helpers shared by the format definitions ----*- C++ -*-===//

#ifndef QTUNE_DIALECT_QTUNE_IR_FORMATUTILS_H
#define QTUNE_DIALECT_QTUNE_IR_FORMATUTILS_H

#include "qtune/Dialect/QTune/IR/QTuneAttrs.h"
#include "qtune/Support/HostTensor.h"
#include "qtune/Support/Packing.h"

namespace qtune::format {

/// Packed code words of a component, as unsigned 32-bit values (negative values,
/// read from signed i32 data, are taken modulo 2^32).
std::vector<uint32_t> wordsOf(const HostTensor &t);

/// A codes component holding `words`.
HostTensor tensorOfWords(const std::vector<uint32_t> &words,
                         std::vector<int64_t> shape);

/// `value` after storing it as `type` (round to nearest even, or toward +inf when
/// `roundUp`).
double roundTo(double value, mlir::Type type, bool roundUp = false);

/// Checks that `group` (0 = the whole row) divides the row length `k`.
llvm::LogicalResult
verifyGroupDivides(int64_t k, int64_t group, llvm::StringRef paramName,
                   llvm::function_ref<mlir::InFlightDiagnostic()> emitError);

/// The codes component every format starts with.
ComponentSpec codesSpec(mlir::MLIRContext *ctx, int64_t n, int64_t k,
                        unsigned bits);

/// Calls fn(r, c, q) for every element (r, c) of an n×k weight with its code q,
/// read from a codes component in canonical packing.
template <typename Fn>
void forEachCode(const HostTensor &codes, int64_t n, int64_t k, unsigned bits,
                 Fn fn) {
  int64_t wpr = packedWordsPerRow(k, bits);
  std::vector<uint32_t> words = wordsOf(codes);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      fn(r, c, extractCode(&words[r * wpr], c, bits));
}

/// Index of the nearest entry of an ascending `table` to `x` (ties to the lower).
uint32_t nearestIndex(llvm::ArrayRef<double> table, double x);

//===----------------------------------------------------------------------===//
// IR emission helpers for emitDequant (f32 arithmetic on scalars)
//===----------------------------------------------------------------------===//

/// An f32 constant.
mlir::Value f32Const(mlir::OpBuilder &b, mlir::Location loc, double v);
/// An index constant.
mlir::Value indexConst(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
/// Flat index of the float parameter of group ⌊col / groupSize⌋ of `row`, with
/// `groups` groups per row: row · groups + col / groupSize.
mlir::Value groupIndex(mlir::OpBuilder &b, mlir::Location loc, mlir::Value row,
                       mlir::Value col, int64_t groupSize, int64_t groups);
/// An i32 code (below 2^23, as every format's codes are) converted to f32
/// exactly.
mlir::Value codeToF32(mlir::OpBuilder &b, mlir::Location loc, mlir::Value code);
/// table[code] for a constant table of 2^bits entries, as a tree of selects on
/// the code's bits (no dynamic indexing, so no local memory).
mlir::Value selectFromTable(mlir::OpBuilder &b, mlir::Location loc,
                            mlir::Value code, llvm::ArrayRef<double> table);

} // namespace qtune::format

#endif // QTUNE_DIALECT_QTUNE_IR_FORMATUTILS_H
