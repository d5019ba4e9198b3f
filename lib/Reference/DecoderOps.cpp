//===- DecoderOps.cpp - float64 semantics of the decoder ops ---------------===//

#include "qtune/Reference/DecoderOps.h"

#include <cmath>
#include <limits>
#include <vector>

namespace qtune::ref {

namespace {
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

/// Rows of the last dimension: {count, length}.
std::pair<int64_t, int64_t> rowsOf(const HostTensor &x) {
  int64_t d = x.shape.empty() ? 1 : x.shape.back();
  return {d ? x.numElements() / d : 0, d};
}

/// 1 / sqrt(mean(x²) + eps) of one row.
double rmsFactor(const double *x, int64_t d, double eps) {
  double sq = 0;
  for (int64_t j = 0; j < d; ++j)
    sq += x[j] * x[j];
  return 1.0 / std::sqrt(sq / double(d) + eps);
}

/// The dimensions of attention operands: batch (product of the leading
/// dimensions), sequence length, head dimension.
struct Dims {
  int64_t batch, seq, d, h, hkv;
};

Dims dimsOf(const HostTensor &q, const AttentionShape &s) {
  Dims dims;
  dims.h = s.heads;
  dims.hkv = s.kvHeads;
  dims.seq = q.shape[q.shape.size() - 2];
  dims.d = q.shape.back() / s.heads;
  int64_t perBatch = dims.seq * q.shape.back();
  dims.batch = perBatch ? q.numElements() / perBatch : 0;
  return dims;
}

/// Calls fn(b, h, kvh, i, j, score) for every visible (query i, key j) pair of
/// every head, rows in order; score = scale · q_i·k_j.
template <typename Fn>
void forEachScore(const HostTensor &q, const HostTensor &k, const Dims &dims,
                  const AttentionShape &s, Fn fn) {
  int64_t group = dims.h / dims.hkv;
  for (int64_t b = 0; b < dims.batch; ++b)
    for (int64_t h = 0; h < dims.h; ++h) {
      int64_t kvh = h / group;
      for (int64_t i = 0; i < dims.seq; ++i) {
        const double *qi = &q.data[(b * dims.seq + i) * dims.h * dims.d + h * dims.d];
        int64_t last = s.causal ? i : dims.seq - 1;
        const double *seg =
            s.segments ? &s.segments->data[b * dims.seq] : nullptr;
        for (int64_t j = 0; j <= last; ++j) {
          if (seg && seg[j] != seg[i])
            continue;
          const double *kj =
              &k.data[(b * dims.seq + j) * dims.hkv * dims.d + kvh * dims.d];
          double dot = 0;
          for (int64_t c = 0; c < dims.d; ++c)
            dot += qi[c] * kj[c];
          fn(b, h, kvh, i, j, s.scale * dot);
        }
      }
    }
}
} // namespace

HostTensor embedding(const HostTensor &table, const HostTensor &ids) {
  int64_t d = table.shape[1];
  std::vector<int64_t> shape = ids.shape;
  shape.push_back(d);
  HostTensor out(shape);
  for (int64_t i = 0; i < ids.numElements(); ++i)
    for (int64_t j = 0; j < d; ++j)
      out.data[i * d + j] = table.data[int64_t(ids.data[i]) * d + j];
  return out;
}

HostTensor embeddingGrad(const HostTensor &g, const HostTensor &ids, int64_t v) {
  int64_t d = g.shape.back();
  HostTensor out({v, d});
  for (int64_t i = 0; i < ids.numElements(); ++i)
    for (int64_t j = 0; j < d; ++j)
      out.data[int64_t(ids.data[i]) * d + j] += g.data[i * d + j];
  return out;
}

HostTensor rmsNorm(const HostTensor &x, const HostTensor &w, double eps) {
  auto [rows, d] = rowsOf(x);
  HostTensor y(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    const double *xr = &x.data[r * d];
    double f = rmsFactor(xr, d, eps);
    for (int64_t j = 0; j < d; ++j)
      y.data[r * d + j] = xr[j] * f * w.data[j];
  }
  return y;
}

HostTensor rmsNormGrad(const HostTensor &g, const HostTensor &x,
                       const HostTensor &w, double eps) {
  auto [rows, d] = rowsOf(x);
  HostTensor dx(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    const double *xr = &x.data[r * d], *gr = &g.data[r * d];
    double f = rmsFactor(xr, d, eps), ux = 0;
    for (int64_t j = 0; j < d; ++j)
      ux += gr[j] * w.data[j] * xr[j];
    for (int64_t j = 0; j < d; ++j)
      dx.data[r * d + j] =
          f * gr[j] * w.data[j] - f * f * f * xr[j] * ux / double(d);
  }
  return dx;
}

HostTensor rmsNormWeightGrad(const HostTensor &g, const HostTensor &x,
                             double eps) {
  auto [rows, d] = rowsOf(x);
  HostTensor dw({d});
  for (int64_t r = 0; r < rows; ++r) {
    const double *xr = &x.data[r * d];
    double f = rmsFactor(xr, d, eps);
    for (int64_t j = 0; j < d; ++j)
      dw.data[j] += g.data[r * d + j] * xr[j] * f;
  }
  return dw;
}

HostTensor rope(const HostTensor &x, int64_t headDim, double theta,
                bool inverse) {
  int64_t width = x.shape.back(), seq = x.shape[x.shape.size() - 2];
  int64_t rows = x.numElements() / width, half = headDim / 2;
  HostTensor y(x.shape);
  for (int64_t r = 0; r < rows; ++r) {
    double pos = double(r % seq);
    for (int64_t head = 0; head < width / headDim; ++head) {
      const double *xh = &x.data[r * width + head * headDim];
      double *yh = &y.data[r * width + head * headDim];
      for (int64_t j = 0; j < half; ++j) {
        double angle = pos * std::pow(theta, -2.0 * double(j) / double(headDim));
        double c = std::cos(angle), s = inverse ? -std::sin(angle) : std::sin(angle);
        yh[j] = xh[j] * c - xh[j + half] * s;
        yh[j + half] = xh[j + half] * c + xh[j] * s;
      }
    }
  }
  return y;
}

std::array<HostTensor, 2> attention(const HostTensor &q, const HostTensor &k,
                                    const HostTensor &v,
                                    const AttentionShape &s) {
  Dims dims = dimsOf(q, s);
  std::vector<int64_t> lseShape(q.shape.begin(), q.shape.end() - 2);
  lseShape.push_back(dims.h);
  lseShape.push_back(dims.seq);
  HostTensor o(q.shape), lse(lseShape);
  // Pass 1: each row's log-sum-exp (stable: the row maximum first).
  std::vector<double> mx(dims.batch * dims.h * dims.seq,
                         -std::numeric_limits<double>::infinity());
  auto row = [&](int64_t b, int64_t h, int64_t i) {
    return (b * dims.h + h) * dims.seq + i;
  };
  forEachScore(q, k, dims, s, [&](int64_t b, int64_t h, int64_t, int64_t i,
                                  int64_t, double score) {
    mx[row(b, h, i)] = std::max(mx[row(b, h, i)], score);
  });
  forEachScore(q, k, dims, s, [&](int64_t b, int64_t h, int64_t, int64_t i,
                                  int64_t, double score) {
    lse.data[row(b, h, i)] += std::exp(score - mx[row(b, h, i)]);
  });
  for (size_t r = 0; r < mx.size(); ++r)
    lse.data[r] = mx[r] + std::log(lse.data[r]);
  // Pass 2: o = P · v.
  forEachScore(q, k, dims, s, [&](int64_t b, int64_t h, int64_t kvh, int64_t i,
                                  int64_t j, double score) {
    double p = std::exp(score - lse.data[row(b, h, i)]);
    double *oi = &o.data[(b * dims.seq + i) * dims.h * dims.d + h * dims.d];
    const double *vj = &v.data[(b * dims.seq + j) * dims.hkv * dims.d + kvh * dims.d];
    for (int64_t c = 0; c < dims.d; ++c)
      oi[c] += p * vj[c];
  });
  return {std::move(o), std::move(lse)};
}

std::array<HostTensor, 3> attentionGrad(const HostTensor &q, const HostTensor &k,
                                        const HostTensor &v, const HostTensor &o,
                                        const HostTensor &lse, const HostTensor &g,
                                        const AttentionShape &s) {
  Dims dims = dimsOf(q, s);
  HostTensor dq(q.shape), dk(k.shape), dv(v.shape);
  auto qOffset = [&](int64_t b, int64_t i, int64_t h) {
    return (b * dims.seq + i) * dims.h * dims.d + h * dims.d;
  };
  auto kvOffset = [&](int64_t b, int64_t j, int64_t kvh) {
    return (b * dims.seq + j) * dims.hkv * dims.d + kvh * dims.d;
  };
  forEachScore(q, k, dims, s, [&](int64_t b, int64_t h, int64_t kvh, int64_t i,
                                  int64_t j, double score) {
    double p = std::exp(score - lse.data[(b * dims.h + h) * dims.seq + i]);
    const double *gi = &g.data[qOffset(b, i, h)], *oi = &o.data[qOffset(b, i, h)];
    const double *vj = &v.data[kvOffset(b, j, kvh)];
    double dp = 0, delta = 0;
    for (int64_t c = 0; c < dims.d; ++c) {
      dp += gi[c] * vj[c];
      delta += gi[c] * oi[c];
    }
    double ds = p * (dp - delta) * s.scale;
    const double *qi = &q.data[qOffset(b, i, h)];
    const double *kj = &k.data[kvOffset(b, j, kvh)];
    for (int64_t c = 0; c < dims.d; ++c) {
      dq.data[qOffset(b, i, h) + c] += ds * kj[c];
      dk.data[kvOffset(b, j, kvh) + c] += ds * qi[c];
      dv.data[kvOffset(b, j, kvh) + c] += p * gi[c];
    }
  });
  return {std::move(dq), std::move(dk), std::move(dv)};
}

HostTensor swiglu(const HostTensor &gate, const HostTensor &up) {
  HostTensor y(gate.shape);
  for (size_t i = 0; i < y.data.size(); ++i)
    y.data[i] = gate.data[i] * sigmoid(gate.data[i]) * up.data[i];
  return y;
}

std::array<HostTensor, 2> swigluGrad(const HostTensor &gate, const HostTensor &up,
                                     const HostTensor &g) {
  HostTensor dgate(gate.shape), dup(gate.shape);
  for (size_t i = 0; i < g.data.size(); ++i) {
    double x = gate.data[i], sg = sigmoid(x);
    dgate.data[i] = g.data[i] * up.data[i] * sg * (1 + x * (1 - sg));
    dup.data[i] = g.data[i] * x * sg;
  }
  return {std::move(dgate), std::move(dup)};
}

} // namespace qtune::ref
