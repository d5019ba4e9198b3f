//===- Profile.h - where an entry's time goes -------------------*- C++ -*-===//
//
// The per-launch GPU times of an entry (Executor::profile: CUDA events
// between launches, averaged over a few runs) summed per kernel and per op
// family (attention, quantized GEMM, adapter GEMMs, dense GEMM, lm head and
// loss, norms and elementwise, optimizer: recorded per launch by the
// compiler), as the table `qtune-run forward|train --profile N` prints.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_PROFILE_H
#define QTUNE_RUNTIME_PROFILE_H

#include "qtune/runtime/Bundle.h"

#include <string>
#include <vector>

namespace qtune::rt {

struct ProfileRow {
  std::string name; ///< kernel or family
  int launches = 0; ///< launches per run
  double ms = 0;    ///< milliseconds per run
};

struct EntryProfile {
  double totalMs = 0;               ///< per run, the sum of the launches
  std::vector<ProfileRow> kernels;  ///< by time, longest first
  std::vector<ProfileRow> families; ///< by time, longest first
};

/// Sums `launchMs` (one figure per launch of `entry`, per run) by kernel and
/// by family (launches without a family count as "other").
EntryProfile summarize(const Bundle &bundle, const Entry &entry,
                       const std::vector<double> &launchMs);

/// The table: families, then the `topKernels` longest kernels (the rest in
/// one line), each with ms per run, share and launch count.
std::string formatProfile(const EntryProfile &p, const std::string &entryName, int runs,
                          size_t topKernels = 20);

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_PROFILE_H
