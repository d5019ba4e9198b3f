//===- TokenData.h - token files and the batches cut from them --*- C++ -*-===//
//
// Training and evaluation data for language models: one flat sequence of
// token ids in a file, cut into windows of S + 1 consecutive tokens at stride
// S (window k holds tokens [k*S, k*S + S]); a window gives one row of a batch,
// input_ids = window[0:S] and labels = window[1:S+1] (labels[s] is the token
// that follows input_ids[s]). A batch is B windows.
//
// File formats:
//   u16   little-endian uint16 token ids (the usual ".bin" of GPT-2-sized
//         vocabularies; the file size must be even)
//   u32   little-endian uint32 token ids (size a multiple of 4)
//   text  the file's bytes, each a token 0..255 (byte-vocabulary models)
// The default comes from the extension: ".u16" and ".bin" are u16, ".u32" is
// u32, anything else is text.
//
// The order of the windows is deterministic: window by window in the file
// (no shuffle), or a fresh permutation per epoch drawn from a seeded RNG
// (Random.h). A BatchLoader's state is three numbers besides the seed (epoch,
// position within the epoch, and whether it shuffles), so a checkpoint can
// store it and a resumed run draws exactly the batches the uninterrupted run
// would have drawn. Batches wrap over epochs: one that runs past the last
// window of an epoch continues with the first of the next.
//
// Nothing here throws or needs a GPU.
//
//===----------------------------------------------------------------------===//
#ifndef QTUNE_RUNTIME_TOKENDATA_H
#define QTUNE_RUNTIME_TOKENDATA_H

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qtune::rt {

enum class TokenFormat { U16, U32, Text };

/// "u16", "u32", "text".
std::string_view tokenFormatName(TokenFormat format);
std::optional<TokenFormat> parseTokenFormat(std::string_view name);
/// The format a file name implies: ".u16" and ".bin" give U16, ".u32" U32,
/// anything else Text.
TokenFormat tokenFormatForPath(std::string_view path);
/// Bytes per token: 2, 4 or 1.
size_t tokenSize(TokenFormat format);

/// A read-only, memory-mapped token file (or tokens held in memory).
class TokenData {
public:
  /// Opens and checks `path`: it must exist, be a regular file, be non-empty
  /// and have a size that is a multiple of the token size. Errors name the
  /// file: "data.u16: 1001 bytes is not a whole number of u16 tokens (2 bytes
  /// each); pass --data-format if this is not a u16 file".
  static std::unique_ptr<TokenData> open(const std::string &path, TokenFormat format,
                                         std::string &error);
  /// Tokens held in memory, named `name` in messages (tests, generated data).
  /// Returns nullptr and sets `error` when `tokens` is empty.
  static std::unique_ptr<TokenData> fromTokens(std::vector<uint32_t> tokens,
                                               const std::string &name, std::string &error);
  ~TokenData();
  TokenData(const TokenData &) = delete;
  TokenData &operator=(const TokenData &) = delete;

  const std::string &path() const { return path_; }
  TokenFormat format() const { return format_; }
  /// Number of tokens (at least 1).
  uint64_t size() const { return size_; }
  /// Token `i` (< size()).
  uint32_t at(uint64_t i) const;
  /// The largest token id and the position of its first occurrence.
  uint32_t maxToken() const { return maxToken_; }
  uint64_t maxTokenPosition() const { return maxTokenPos_; }

  /// Checks that every id is below `vocab` (the model's vocabulary size):
  /// "data.u16: token 70000 at position 123 is out of range for a vocabulary
  /// of 32000 tokens".
  bool checkVocab(int64_t vocab, std::string &error) const;

  /// Whether this file can be what a model of vocabulary `vocab` (0:
  /// unknown) reads, its format having been taken from its name (`implied`)
  /// or given: a u16 file cannot hold the ids of a vocabulary past 65536;
  /// and, implied only, text (one id a byte) cannot feed a vocabulary past
  /// 256 (a .jsonl or .txt is not tokens), and a ".bin" whose every second
  /// u16 is zero is a u32 file read as u16. The reason to refuse, naming the
  /// file and what to pass instead, or nothing.
  std::optional<std::string> formatProblem(int64_t vocab, bool implied) const;

private:
  TokenData() = default;
  void scan();

  std::string path_;
  TokenFormat format_ = TokenFormat::Text;
  const uint8_t *data_ = nullptr;
  uint64_t size_ = 0;
  void *map_ = nullptr; ///< the mapping (munmap'ed by the destructor), or null
  size_t mapBytes_ = 0;
  std::vector<uint32_t> owned_; ///< fromTokens
  uint32_t maxToken_ = 0;
  uint64_t maxTokenPos_ = 0;
};

/// Where a BatchLoader is in its order of windows.
struct LoaderState {
  uint64_t seed = 0;
  bool shuffle = true;
  uint64_t epoch = 0;    ///< 0-based epoch of the next window
  uint64_t position = 0; ///< windows of that epoch already drawn (< windows)
};

/// One batch: B rows of S tokens each, row-major [B, S].
struct TokenBatch {
  int64_t batch = 0;
  int64_t seqLen = 0;
  std::vector<int32_t> inputIds;
  std::vector<int32_t> labels;
};

class BatchLoader {
public:
  /// A loader of batches of `batch` windows of `seqLen` + 1 tokens of `data`
  /// (which must outlive it). Fails when batch or seqLen is below 1, when the
  /// data hold fewer than seqLen + 1 tokens ("data.u16: 100 tokens are fewer
  /// than one window of 129 (sequence length 128 + 1)"), when a token does
  /// not fit the I32 inputs, or when shuffling 2^32 windows or more.
  static std::unique_ptr<BatchLoader> create(const TokenData &data, int64_t batch,
                                             int64_t seqLen, bool shuffle, uint64_t seed,
                                             std::string &error);

  int64_t batch() const { return batch_; }
  int64_t seqLen() const { return seqLen_; }
  /// Number of windows: (size - 1) / seqLen.
  uint64_t windows() const { return windows_; }
  /// Tokens of one batch: batch * seqLen.
  int64_t tokensPerBatch() const { return batch_ * seqLen_; }

  /// Fills `out` with the next batch and advances.
  void next(TokenBatch &out);
  /// Data parallel: this loader is rank `rank` of `world`. Every rank draws
  /// the same global batch of world * batch() windows (the windows a single
  /// loader of that batch would draw) and next() returns this rank's rows
  /// [rank * batch(), (rank + 1) * batch()); the state advances by the whole
  /// global batch, so every rank's state (and a checkpoint of it) is the same.
  bool shard(int rank, int world, std::string &error);
  /// The index of the next window, and advances by one.
  uint64_t nextWindow();

  LoaderState state() const { return state_; }
  /// Continues from `s` (seed and shuffle included). Fails when the position
  /// is not below windows().
  bool restore(const LoaderState &s, std::string &error);

  /// The window at `position` of `epoch`'s order (position < windows()).
  uint64_t windowAt(uint64_t epoch, uint64_t position) const;

private:
  BatchLoader(const TokenData &data) : data_(data) {}
  void makeOrder(uint64_t epoch);

  const TokenData &data_;
  int64_t batch_ = 0, seqLen_ = 0;
  int rank_ = 0, world_ = 1;
  uint64_t windows_ = 0;
  LoaderState state_;
  uint64_t orderEpoch_ = UINT64_MAX; ///< epoch whose permutation order_ holds
  std::vector<uint32_t> order_;
};

/// The permutation of 0..n-1 of `epoch` for `seed` (Fisher-Yates with an Rng
/// seeded by mixing both; n < 2^32). The same arguments give the same order
/// everywhere.
std::vector<uint32_t> epochOrder(uint32_t n, uint64_t seed, uint64_t epoch);

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_TOKENDATA_H
