//===- AtomicFile.h - atomic whole-file writes ------------------*- C++ -*-===//
//
// Writes a file so that readers see either the old contents or the complete
// new contents, never a partial file: the data go to a uniquely named
// temporary file in the destination's directory, which is fsync'ed, closed
// and renamed over the destination.
//
// Nothing here throws. The header compiles without exceptions or RTTI.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_ATOMICFILE_H
#define QTUNE_RUNTIME_ATOMICFILE_H

#include <string>
#include <string_view>
#include <vector>

namespace qtune {

/// Writes the concatenation of `pieces` (in order) to `path` atomically.
///
/// The temporary file "<path>.tmp.<pid>.<n>" is created with O_EXCL and mode
/// 0666 (so the umask applies as for a normally created file), written
/// (retrying on EINTR), fsync'ed, closed and renamed over `path`; then the
/// directory is fsync'ed (best effort). On any failure the temporary file is
/// removed, `path` is left as it was, false is returned and `error` holds the
/// reason without the path, e.g. "write failed: No space left on device".
bool writeFileAtomically(const std::string &path,
                         const std::vector<std::string_view> &pieces,
                         std::string &error);

} // namespace qtune

#endif // QTUNE_RUNTIME_ATOMICFILE_H
