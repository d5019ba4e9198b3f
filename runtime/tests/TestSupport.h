//===- TestSupport.h - helpers shared by the runtime's tests ----*- C++ -*-===//
//
// Whether a GPU answers, running the qtune-run tool, building tensors, and a
// fixture with a temporary directory of files. Header-only: each test file of
// qtune-rt-unittests includes it.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_TESTS_TESTSUPPORT_H
#define QTUNE_RUNTIME_TESTS_TESTSUPPORT_H

#include "qtune/runtime/Cuda.h"
#include "qtune/runtime/Safetensors.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <sys/wait.h>

namespace qtune::rt::test {

/// Whether GPU 0 answers (asked once); `why` receives the reason when not.
inline bool haveGpu(std::string &why) {
  static std::string reason;
  static const bool have = [] { return cuda::Context::create(0, reason) != nullptr; }();
  why = reason;
  return have;
}

/// Runs qtune-run (the one built beside the tests, or $QTUNE_RUN where the
/// binaries were moved) with `args`; returns the exit status, stdout+stderr in
/// `out`.
inline int runQtuneRun(const std::string &args, std::string &out) {
  out.clear();
  const char *tool = std::getenv("QTUNE_RUN");
  FILE *p = ::popen((std::string(tool ? tool : QTUNE_RUN_PATH) + " " + args + " 2>&1").c_str(),
                    "r");
  if (!p)
    return -1;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
    out.append(buf, n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// A tensor named `name` of dtype `dt` holding `v` (converted).
inline st::OwnedTensor tensor(const std::string &name, st::DType dt,
                              const std::vector<double> &v, std::vector<int64_t> shape) {
  st::OwnedTensor t{name, dt, std::move(shape), {}};
  std::string error;
  EXPECT_TRUE(st::fromDoubles(v, dt, t.bytes, error)) << error;
  return t;
}

/// A fixture owning a fresh temporary directory (removed after the test).
class TempDirTest : public ::testing::Test {
protected:
  /// Makes the directory; call first from SetUp().
  void makeDir(const std::string &prefix) {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string path(const std::string &name) const { return (dir_ / name).string(); }
  void writeTensors(const std::string &name, const std::vector<st::OwnedTensor> &ts) {
    std::string error;
    ASSERT_TRUE(st::write(path(name), ts, {}, error)) << error;
  }
  std::filesystem::path dir_;
};

} // namespace qtune::rt::test

#endif // QTUNE_RUNTIME_TESTS_TESTSUPPORT_H
