//===- DecoderOps.h - float64 semantics of the decoder ops ------*- C++ -*-===//
//
// Host implementations of qtune's LLaMA-family decoder ops and their gradient
// ops (see QTuneDecoderOps.td), in float64, for the reference interpreter.
// Activations are [..., S, D]: every function treats the leading dimensions
// as a batch. Arguments are assumed to have passed the ops' verifiers.
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_REFERENCE_DECODEROPS_H
#define QTUNE_REFERENCE_DECODEROPS_H

#include "qtune/Support/HostTensor.h"

#include <array>
#include <cstdint>

namespace qtune::ref {

/// result[i, :] = table[ids[i], :]; ids must lie in [0, V) (checked by the
/// caller, which reports the bad position).
HostTensor embedding(const HostTensor &table, const HostTensor &ids);
/// grad[v, :] = Σ_{i : ids[i] = v} g[i, :], a V×D tensor.
HostTensor embeddingGrad(const HostTensor &g, const HostTensor &ids, int64_t v);

HostTensor rmsNorm(const HostTensor &x, const HostTensor &w, double eps);
HostTensor rmsNormGrad(const HostTensor &g, const HostTensor &x,
                       const HostTensor &w, double eps);
HostTensor rmsNormWeightGrad(const HostTensor &g, const HostTensor &x,
                             double eps);

/// Rotary embedding of x [..., S, H·headDim] (rotate-half layout); `inverse`
/// rotates by the opposite angles.
HostTensor rope(const HostTensor &x, int64_t headDim, double theta,
                bool inverse);

struct AttentionShape {
  int64_t heads = 1, kvHeads = 1;
  double scale = 1.0;
  bool causal = true;
  /// Segment ids [..., S], or null: keys of other segments are hidden.
  const HostTensor *segments = nullptr;
};
/// {o [..., S, H·d], lse [..., H, S]}.
std::array<HostTensor, 2> attention(const HostTensor &q, const HostTensor &k,
                                    const HostTensor &v,
                                    const AttentionShape &shape);
/// {dq, dk, dv}.
std::array<HostTensor, 3> attentionGrad(const HostTensor &q, const HostTensor &k,
                                        const HostTensor &v, const HostTensor &o,
                                        const HostTensor &lse, const HostTensor &g,
                                        const AttentionShape &shape);

HostTensor swiglu(const HostTensor &gate, const HostTensor &up);
/// {dgate, dup}.
std::array<HostTensor, 2> swigluGrad(const HostTensor &gate, const HostTensor &up,
                                     const HostTensor &g);

} // namespace qtune::ref

#endif // QTUNE_REFERENCE_DECODEROPS_H
