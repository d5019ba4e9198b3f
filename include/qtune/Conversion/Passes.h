//===- Passes.h - qtune conversion passes ------------------------*- C++ -*-===//

#ifndef QTUNE_CONVERSION_PASSES_H
#define QTUNE_CONVERSION_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/NVGPU/IR/NVGPUDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

namespace qtune {

#define GEN_PASS_DECL
#include "qtune/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "qtune/Conversion/Passes.h.inc"

} // namespace qtune

#endif // QTUNE_CONVERSION_PASSES_H
