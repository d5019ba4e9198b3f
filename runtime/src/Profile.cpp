//===- Profile.cpp - where an entry's time goes -----------------------------===//

#include "qtune/runtime/Profile.h"

#include <algorithm>
#include <cstdio>
#include <map>

namespace qtune::rt {

namespace {
std::vector<ProfileRow> sorted(const std::map<std::string, ProfileRow> &rows) {
  std::vector<ProfileRow> out;
  for (const auto &[name, row] : rows)
    out.push_back(row);
  std::stable_sort(out.begin(), out.end(),
                   [](const ProfileRow &a, const ProfileRow &b) { return a.ms > b.ms; });
  return out;
}

void line(std::string &out, const char *name, double ms, double total, int launches) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "  %-44s %10.3f ms %6.1f %% %7d\n", name, ms,
                total > 0 ? 100.0 * ms / total : 0.0, launches);
  out += buf;
}
} // namespace

EntryProfile summarize(const Bundle &bundle, const Entry &entry,
                       const std::vector<double> &launchMs) {
  std::map<std::string, ProfileRow> kernels, families;
  EntryProfile p;
  for (size_t i = 0; i < entry.launches.size() && i < launchMs.size(); ++i) {
    const Launch &l = entry.launches[i];
    const std::string &kernel = bundle.kernels[l.kernel].name;
    const std::string family = l.family.empty() ? "other" : l.family;
    for (auto [map, key] : {std::pair{&kernels, &kernel}, std::pair{&families, &family}}) {
      ProfileRow &r = (*map)[*key];
      r.name = *key;
      r.launches += 1;
      r.ms += launchMs[i];
    }
    p.totalMs += launchMs[i];
  }
  p.kernels = sorted(kernels);
  p.families = sorted(families);
  return p;
}

std::string formatProfile(const EntryProfile &p, const std::string &entryName, int runs,
                          size_t topKernels) {
  std::string out;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "profile of entry '%s': %.3f ms per run (GPU time of its launches, mean of %d "
                "runs, launched one by one)\n",
                entryName.c_str(), p.totalMs, runs);
  out += buf;
  std::snprintf(buf, sizeof buf, "  %-44s %13s %8s %7s\n", "family", "time", "share", "launches");
  out += buf;
  for (const ProfileRow &r : p.families)
    line(out, r.name.c_str(), r.ms, p.totalMs, r.launches);
  std::snprintf(buf, sizeof buf, "  %-44s %13s %8s %7s\n", "kernel", "time", "share", "launches");
  out += buf;
  double restMs = 0;
  int restLaunches = 0, restKernels = 0;
  for (size_t i = 0; i < p.kernels.size(); ++i) {
    const ProfileRow &r = p.kernels[i];
    if (i < topKernels) {
      line(out, r.name.c_str(), r.ms, p.totalMs, r.launches);
      continue;
    }
    restMs += r.ms;
    restLaunches += r.launches;
    ++restKernels;
  }
  if (restKernels) {
    std::snprintf(buf, sizeof buf, "(%d more kernels)", restKernels);
    line(out, buf, restMs, p.totalMs, restLaunches);
  }
  return out;
}

} // namespace qtune::rt
