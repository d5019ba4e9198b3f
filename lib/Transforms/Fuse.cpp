//===- Fuse.cpp - fuse linear epilogues into qtune.fused_linear -----------===//

#include "qtune/Dialect/QTune/IR/QTuneOps.h"
#include "qtune/Transforms/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace qtune {
#define GEN_PASS_DEF_QTUNEFUSE
#include "qtune/Transforms/Passes.h.inc"
} // namespace qtune

using namespace mlir;
using namespace qtune;

namespace {

/// The parts of a linear layer, read from a linear or a fused_linear.
struct LinearParts {
  Value input, weight, bias, loraA, loraB, residual;
  FloatAttr alpha, dropout;
  IntegerAttr rank;
  Attribute schedule; // the layer's qtune.schedule, kept through fusion

  static std::optional<LinearParts> of(Value v) {
    Operation *op = v.getDefiningOp();
    Attribute schedule =
        op ? op->getAttr(QTuneDialect::kScheduleAttrName) : Attribute();
    if (auto l = dyn_cast_or_null<LinearOp>(op))
      return LinearParts{l.getInput(), l.getWeight(), l.getBias(), {}, {}, {},
                         {},           {},            {},          schedule};
    if (auto f = dyn_cast_or_null<FusedLinearOp>(op))
      return LinearParts{f.getInput(),         f.getWeight(),
                         f.getBias(),          f.getLoraA(),
                         f.getLoraB(),         f.getResidual(),
                         f.getLoraAlphaAttr(), f.getLoraDropoutAttr(),
                         f.getLoraRankAttr(),  schedule};
    return std::nullopt;
  }

  FusedLinearOp build(PatternRewriter &rewriter, Operation *replaced) const {
    auto op = FusedLinearOp::create(
        rewriter, replaced->getLoc(), replaced->getResult(0).getType(), input,
        weight, bias, loraA, loraB, residual, alpha, rank,
        dropout ? dropout : rewriter.getF64FloatAttr(0.0));
    if (schedule)
      op->setAttr(QTuneDialect::kScheduleAttrName, schedule);
    rewriter.replaceOp(replaced, op.getResult());
    return op;
  }
};

/// addf(linear, lora) -> fused_linear with a LoRA term.
struct FuseLora : OpRewritePattern<arith::AddFOp> {
  FuseLora(MLIRContext *ctx) : OpRewritePattern(ctx, /*benefit=*/2) {}

  LogicalResult matchAndRewrite(arith::AddFOp add,
                                PatternRewriter &rewriter) const override {
    for (auto [lin, other] : {std::pair{add.getLhs(), add.getRhs()},
                              std::pair{add.getRhs(), add.getLhs()}}) {
      std::optional<LinearParts> parts = LinearParts::of(lin);
      auto lora = other.getDefiningOp<LoraOp>();
      if (!parts || !lora || parts->loraA || parts->residual ||
          !lin.hasOneUse() || !other.hasOneUse() ||
          lora.getInput() != parts->input || other.getType() != add.getType() ||
          lin.getType() != add.getType())
        continue;
      parts->loraA = lora.getA();
      parts->loraB = lora.getB();
      parts->alpha = lora.getAlphaAttr();
      parts->rank = lora.getRankAttr();
      parts->dropout = lora.getDropoutAttr();
      Operation *linOp = lin.getDefiningOp();
      parts->build(rewriter, add);
      rewriter.eraseOp(lora);
      rewriter.eraseOp(linOp);
      return success();
    }
    return failure();
  }
};

/// addf(linear-or-fused, r) -> fused_linear with residual r.
struct FuseResidual : OpRewritePattern<arith::AddFOp> {
  FuseResidual(MLIRContext *ctx) : OpRewritePattern(ctx, /*benefit=*/1) {}

  LogicalResult matchAndRewrite(arith::AddFOp add,
                                PatternRewriter &rewriter) const override {
    for (auto [lin, other] : {std::pair{add.getLhs(), add.getRhs()},
                              std::pair{add.getRhs(), add.getLhs()}}) {
      std::optional<LinearParts> parts = LinearParts::of(lin);
      if (!parts || parts->residual || !lin.hasOneUse() ||
          other.getType() != add.getType() || lin.getType() != add.getType())
        continue;
      // A LoRA term of the same input fuses as an adapter, not a residual.
      if (auto lora = other.getDefiningOp<LoraOp>())
        if (!parts->loraA && lora.getInput() == parts->input &&
            other.hasOneUse())
          continue;
      parts->residual = other;
      Operation *linOp = lin.getDefiningOp();
      parts->build(rewriter, add);
      rewriter.eraseOp(linOp);
      return success();
    }
    return failure();
  }
};

struct QTuneFusePass : qtune::impl::QTuneFuseBase<QTuneFusePass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseLora, FuseResidual>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};

} // namespace
