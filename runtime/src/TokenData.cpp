//===- TokenData.cpp - token files and the batches cut from them ----------===//

#include "qtune/runtime/TokenData.h"

#include "qtune/runtime/Random.h"

#include <cerrno>
#include <cstring>
#include <exception>
#include <limits>
#include <new>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token files are little-endian and read in place"
#endif

namespace qtune::rt {

namespace {

std::string str(uint64_t v) { return std::to_string(v); }

bool endsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

} // namespace

std::string_view tokenFormatName(TokenFormat format) {
  switch (format) {
  case TokenFormat::U16: return "u16";
  case TokenFormat::U32: return "u32";
  case TokenFormat::Text: return "text";
  }
  return "?";
}

std::optional<TokenFormat> parseTokenFormat(std::string_view name) {
  if (name == "u16")
    return TokenFormat::U16;
  if (name == "u32")
    return TokenFormat::U32;
  if (name == "text")
    return TokenFormat::Text;
  return std::nullopt;
}

TokenFormat tokenFormatForPath(std::string_view path) {
  if (endsWith(path, ".u16") || endsWith(path, ".bin"))
    return TokenFormat::U16;
  if (endsWith(path, ".u32"))
    return TokenFormat::U32;
  return TokenFormat::Text;
}

size_t tokenSize(TokenFormat format) {
  switch (format) {
  case TokenFormat::U16: return 2;
  case TokenFormat::U32: return 4;
  case TokenFormat::Text: return 1;
  }
  return 1;
}

// ---- TokenData ----------------------------------------------------------------------

std::unique_ptr<TokenData> TokenData::open(const std::string &path, TokenFormat format,
                                           std::string &error) {
  auto fail = [&](const std::string &why) -> std::unique_ptr<TokenData> {
    error = path + ": " + why;
    return nullptr;
  };
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return fail(std::string("cannot open: ") + std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return fail(std::string("cannot stat: ") + std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return fail("not a regular file");
    }
    const uint64_t bytes = static_cast<uint64_t>(st.st_size);
    const size_t unit = tokenSize(format);
    if (bytes == 0) {
      ::close(fd);
      return fail("the file is empty; it holds no tokens");
    }
    if (bytes % unit != 0) {
      ::close(fd);
      return fail(str(bytes) + " bytes is not a whole number of " +
                  std::string(tokenFormatName(format)) + " tokens (" + str(unit) +
                  " bytes each); pass --data-format if this is not a " +
                  std::string(tokenFormatName(format)) + " file");
    }
    void *map = ::mmap(nullptr, bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    const int mapErr = errno;
    ::close(fd);
    if (map == MAP_FAILED)
      return fail(std::string("cannot map: ") + std::strerror(mapErr));
    std::unique_ptr<TokenData> d(new TokenData());
    d->path_ = path;
    d->format_ = format;
    d->map_ = map;
    d->mapBytes_ = bytes;
    d->data_ = static_cast<const uint8_t *>(map);
    d->size_ = bytes / unit;
    d->scan();
    return d;
  } catch (const std::bad_alloc &) {
    return fail("out of memory");
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}

std::optional<std::string> TokenData::formatProblem(int64_t vocab, bool implied) const {
  const std::string name = std::string(tokenFormatName(format_));
  if (format_ == TokenFormat::U16 && vocab > 65536)
    return path_ + ": a u16 token file cannot hold the ids of a vocabulary of " + str(vocab) +
           " tokens; pass --data-format u32 if it holds u32 ids";
  if (!implied)
    return std::nullopt;
  if (format_ == TokenFormat::Text && vocab > 256)
    return path_ + ": read as text (one token a byte, from its name), but the model's "
                   "vocabulary has " + str(vocab) + " tokens: tokenize it first, or pass "
                   "--data-format u16, u32 or text to say what it holds";
  if (format_ == TokenFormat::U16 && endsWith(path_, ".bin") && size_ >= 2) {
    bool oddZero = true;
    for (uint64_t i = 1; i < size_ && oddZero; i += 2)
      oddZero = at(i) == 0;
    if (oddZero)
      return path_ + ": every second u16 id is 0, as in a u32 file read as u16; pass "
                     "--data-format u32 (or u16 if it truly is)";
  }
  return std::nullopt;
}

std::unique_ptr<TokenData> TokenData::fromTokens(std::vector<uint32_t> tokens,
                                                 const std::string &name, std::string &error) {
  if (tokens.empty()) {
    error = name + ": no tokens";
    return nullptr;
  }
  try {
    std::unique_ptr<TokenData> d(new TokenData());
    d->path_ = name;
    d->format_ = TokenFormat::U32;
    d->owned_ = std::move(tokens);
    d->data_ = reinterpret_cast<const uint8_t *>(d->owned_.data());
    d->size_ = d->owned_.size();
    d->scan();
    return d;
  } catch (const std::bad_alloc &) {
    error = name + ": out of memory";
    return nullptr;
  }
}

TokenData::~TokenData() {
  if (map_)
    ::munmap(map_, mapBytes_);
}

uint32_t TokenData::at(uint64_t i) const {
  switch (format_) {
  case TokenFormat::Text: return data_[i];
  case TokenFormat::U16: {
    uint16_t v;
    std::memcpy(&v, data_ + 2 * i, 2);
    return v;
  }
  case TokenFormat::U32: {
    uint32_t v;
    std::memcpy(&v, data_ + 4 * i, 4);
    return v;
  }
  }
  return 0;
}

void TokenData::scan() {
  maxToken_ = at(0);
  maxTokenPos_ = 0;
  for (uint64_t i = 1; i < size_; ++i) {
    const uint32_t t = at(i);
    if (t > maxToken_) {
      maxToken_ = t;
      maxTokenPos_ = i;
    }
  }
}

bool TokenData::checkVocab(int64_t vocab, std::string &error) const {
  if (vocab < 1) {
    error = path_ + ": the vocabulary size must be at least 1 (got " + std::to_string(vocab) + ")";
    return false;
  }
  if (static_cast<uint64_t>(maxToken_) < static_cast<uint64_t>(vocab))
    return true;
  // The first out-of-range token, which is not necessarily the largest.
  for (uint64_t i = 0; i < size_; ++i) {
    const uint32_t t = at(i);
    if (static_cast<uint64_t>(t) >= static_cast<uint64_t>(vocab)) {
      error = path_ + ": token " + str(t) + " at position " + str(i) +
              " is out of range for a vocabulary of " + std::to_string(vocab) + " tokens";
      return false;
    }
  }
  return true; // not reached: maxToken_ is one of them
}

// ---- BatchLoader ---------------------------------------------------------------------

std::vector<uint32_t> epochOrder(uint32_t n, uint64_t seed, uint64_t epoch) {
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i)
    order[i] = i;
  Rng rng(splitMix64(seed) ^ splitMix64(epoch + 0x5DEECE66Dull));
  for (uint32_t i = n; i > 1; --i) { // Fisher-Yates, from the back
    const uint32_t j = static_cast<uint32_t>(rng.below(i));
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

std::unique_ptr<BatchLoader> BatchLoader::create(const TokenData &data, int64_t batch,
                                                 int64_t seqLen, bool shuffle, uint64_t seed,
                                                 std::string &error) {
  if (batch < 1 || seqLen < 1) {
    error = data.path() + ": batch size and sequence length must be at least 1 (got " +
            std::to_string(batch) + " and " + std::to_string(seqLen) + ")";
    return nullptr;
  }
  if (data.size() < static_cast<uint64_t>(seqLen) + 1) {
    error = data.path() + ": " + str(data.size()) + " tokens are fewer than one window of " +
            std::to_string(seqLen + 1) + " (sequence length " + std::to_string(seqLen) + " + 1)";
    return nullptr;
  }
  if (data.maxToken() > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
    error = data.path() + ": token " + str(data.maxToken()) + " at position " +
            str(data.maxTokenPosition()) + " does not fit the model's I32 token inputs";
    return nullptr;
  }
  const uint64_t windows = (data.size() - 1) / static_cast<uint64_t>(seqLen);
  if (shuffle && windows > std::numeric_limits<uint32_t>::max()) {
    error = data.path() + ": " + str(windows) + " windows are too many to shuffle (at most " +
            str(std::numeric_limits<uint32_t>::max()) + "); use --no-shuffle";
    return nullptr;
  }
  try {
    std::unique_ptr<BatchLoader> l(new BatchLoader(data));
    l->batch_ = batch;
    l->seqLen_ = seqLen;
    l->windows_ = windows;
    l->state_.seed = seed;
    l->state_.shuffle = shuffle;
    return l;
  } catch (const std::bad_alloc &) {
    error = data.path() + ": out of memory";
    return nullptr;
  }
}

void BatchLoader::makeOrder(uint64_t epoch) {
  if (orderEpoch_ == epoch)
    return;
  order_ = epochOrder(static_cast<uint32_t>(windows_), state_.seed, epoch);
  orderEpoch_ = epoch;
}

uint64_t BatchLoader::windowAt(uint64_t epoch, uint64_t position) const {
  if (!state_.shuffle)
    return position;
  if (orderEpoch_ == epoch)
    return order_[position];
  return epochOrder(static_cast<uint32_t>(windows_), state_.seed, epoch)[position];
}

uint64_t BatchLoader::nextWindow() {
  uint64_t w = state_.position;
  if (state_.shuffle) {
    makeOrder(state_.epoch);
    w = order_[state_.position];
  }
  if (++state_.position == windows_) {
    state_.position = 0;
    ++state_.epoch;
  }
  return w;
}

void BatchLoader::next(TokenBatch &out) {
  const size_t n = static_cast<size_t>(batch_ * seqLen_);
  out.batch = batch_;
  out.seqLen = seqLen_;
  out.inputIds.resize(n);
  out.labels.resize(n);
  // Data parallel: the world draws one batch of world * batch windows; this
  // rank keeps rows [rank * batch, (rank + 1) * batch) of it.
  for (int64_t r = 0; r < rank_ * batch_; ++r)
    nextWindow();
  for (int64_t b = 0; b < batch_; ++b) {
    const uint64_t start = nextWindow() * static_cast<uint64_t>(seqLen_);
    int32_t *ids = out.inputIds.data() + b * seqLen_;
    int32_t *labels = out.labels.data() + b * seqLen_;
    for (int64_t s = 0; s < seqLen_; ++s) {
      ids[s] = static_cast<int32_t>(data_.at(start + s));
      labels[s] = static_cast<int32_t>(data_.at(start + s + 1));
    }
  }
  for (int64_t r = (rank_ + 1) * batch_; r < world_ * batch_; ++r)
    nextWindow();
}

bool BatchLoader::shard(int rank, int world, std::string &error) {
  if (world < 1 || rank < 0 || rank >= world) {
    error = "rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world);
    return false;
  }
  rank_ = rank;
  world_ = world;
  return true;
}

bool BatchLoader::restore(const LoaderState &s, std::string &error) {
  if (s.position >= windows_) {
    error = data_.path() + ": loader position " + str(s.position) + " is past the " +
            str(windows_) + " windows of the data";
    return false;
  }
  if (s.shuffle && windows_ > std::numeric_limits<uint32_t>::max()) {
    error = data_.path() + ": too many windows to shuffle";
    return false;
  }
  state_ = s;
  orderEpoch_ = UINT64_MAX;
  order_.clear();
  return true;
}

} // namespace qtune::rt
