//===- AtomicFile.cpp - atomic whole-file writes --------------------------===//

#include "qtune/runtime/AtomicFile.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <exception>
#include <new>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace qtune {

namespace {

std::atomic<uint64_t> gTempCounter{0};

std::string errnoString(int err) { return std::strerror(err); }

/// write(2) until everything is written, retrying on EINTR.
bool writeAll(int fd, const char *p, size_t size, int &err) {
  while (size > 0) {
    const size_t chunk = std::min<size_t>(size, size_t(1) << 30);
    const ssize_t n = ::write(fd, p, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = errno;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string parentDirectory(const std::string &path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

} // namespace

bool writeFileAtomically(const std::string &path,
                         const std::vector<std::string_view> &pieces,
                         std::string &error) {
  std::string tmpPath;
  int fd = -1;
  auto fail = [&](const char *what, const std::string &detail) noexcept {
    if (fd >= 0)
      ::close(fd);
    if (!tmpPath.empty())
      ::unlink(tmpPath.c_str());
    try {
      error = what;
      error += detail;
    } catch (...) {
      // Out of memory while building the message: leave what fits.
    }
    return false;
  };
  try {
    // Unique temporary file next to the destination (same file system, so
    // rename() is atomic). Created with 0666 so the umask applies as for a
    // normally created file. tmpPath is set only once the file is ours, so a
    // failure never removes a file that belongs to someone else.
    for (int attempt = 0; attempt < 100 && fd < 0; ++attempt) {
      std::string candidate = path + ".tmp." + std::to_string(::getpid()) +
                              "." + std::to_string(gTempCounter.fetch_add(1));
      fd = ::open(candidate.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                  0666);
      if (fd >= 0) {
        tmpPath = std::move(candidate);
      } else if (errno != EEXIST) {
        const int err = errno;
        return fail("cannot create temporary file in ",
                    parentDirectory(path) + ": " + errnoString(err));
      }
    }
    if (fd < 0)
      return fail("cannot create a unique temporary file", "");

    int err = 0;
    for (std::string_view piece : pieces)
      if (!writeAll(fd, piece.data(), piece.size(), err))
        return fail("write failed: ", errnoString(err));
    if (::fsync(fd) != 0)
      return fail("fsync failed: ", errnoString(errno));
    const int closeResult = ::close(fd);
    fd = -1;
    if (closeResult != 0)
      return fail("close failed: ", errnoString(errno));
    if (::rename(tmpPath.c_str(), path.c_str()) != 0)
      return fail("rename of the temporary file failed: ", errnoString(errno));
    tmpPath.clear(); // now owned by `path`
  } catch (const std::bad_alloc &) {
    return fail("out of memory", "");
  } catch (const std::exception &e) {
    return fail(e.what(), "");
  } catch (...) {
    return fail("unknown error while writing", "");
  }

  // The file is in place. Persist the directory entry (best effort: some file
  // systems refuse, and nothing here may turn the write into a failure).
  try {
    const int dirFd = ::open(parentDirectory(path).c_str(),
                             O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirFd >= 0) {
      (void)::fsync(dirFd);
      ::close(dirFd);
    }
  } catch (...) {
  }
  return true;
}

} // namespace qtune
