//===- Safetensors.cpp - safetensors reader/writer ------------------------===//

#include "qtune/runtime/Safetensors.h"

#include "qtune/runtime/AtomicFile.h"
#include "qtune/runtime/Float16.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <set>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qtune safetensors assumes a little-endian host"
#endif

namespace qtune::st {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

using OrderedJson = nlohmann::ordered_json;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
  bool isFloat;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1, false}, {DType::U8, "U8", 1, false},
    {DType::I8, "I8", 1, false},     {DType::I16, "I16", 2, false},
    {DType::U16, "U16", 2, false},   {DType::F16, "F16", 2, true},
    {DType::BF16, "BF16", 2, true},  {DType::I32, "I32", 4, false},
    {DType::U32, "U32", 4, false},   {DType::F32, "F32", 4, true},
    {DType::F64, "F64", 8, true},    {DType::I64, "I64", 8, false},
    {DType::U64, "U64", 8, false},
};

const DTypeEntry *lookup(DType dtype) {
  for (const DTypeEntry &e : kDTypes)
    if (e.dtype == dtype)
      return &e;
  return nullptr;
}

std::string quote(std::string_view s) {
  std::string r = "'";
  r.append(s);
  r += "'";
  return r;
}


std::string formatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string errnoString(int err) { return std::strerror(err); }

/// Product of the dims with overflow and sign checks.
bool checkedNumel(const std::vector<int64_t> &shape, int64_t &numel,
                  std::string &why) {
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    const int64_t d = shape[i];
    if (d < 0) {
      why = "shape[" + std::to_string(i) + "] = " + std::to_string(d) +
            " is negative";
      return false;
    }
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) {
      why = "element count of shape " + shapeText(shape) + " overflows int64";
      return false;
    }
    n *= d;
  }
  numel = n;
  return true;
}

/// numel * dtypeSize with overflow check.
bool checkedByteSize(const std::vector<int64_t> &shape, DType dtype,
                     uint64_t &bytes, std::string &why) {
  int64_t n = 0;
  if (!checkedNumel(shape, n, why))
    return false;
  const uint64_t size = dtypeSize(dtype);
  if (size != 0 &&
      static_cast<uint64_t>(n) > std::numeric_limits<uint64_t>::max() / size) {
    why = "byte size of shape " + shapeText(shape) + " of " +
          std::string(dtypeName(dtype)) + " overflows";
    return false;
  }
  bytes = static_cast<uint64_t>(n) * size;
  return true;
}

const char *jsonTypeName(const OrderedJson &j) {
  if (j.is_number_unsigned() || j.is_number_integer())
    return "an integer";
  if (j.is_number_float())
    return "a floating-point number";
  if (j.is_string())
    return "a string";
  if (j.is_boolean())
    return "a boolean";
  if (j.is_null())
    return "null";
  if (j.is_array())
    return "an array";
  if (j.is_object())
    return "an object";
  return "an unknown JSON value";
}

// ---- little-endian element access --------------------------------------------

template <typename T> T loadLE(const uint8_t *p) {
  T v;
  std::memcpy(&v, p, sizeof v); // host is little-endian (checked above)
  return v;
}

template <typename T> void storeLE(uint8_t *p, T v) {
  std::memcpy(p, &v, sizeof v);
}

} // namespace

// ---- dtypes ----------------------------------------------------------------------

std::string_view dtypeName(DType dtype) {
  const DTypeEntry *e = lookup(dtype);
  return e ? e->name : std::string_view("<invalid dtype>");
}

std::optional<DType> parseDType(std::string_view name) {
  for (const DTypeEntry &e : kDTypes)
    if (e.name == name)
      return e.dtype;
  return std::nullopt;
}

size_t dtypeSize(DType dtype) {
  const DTypeEntry *e = lookup(dtype);
  return e ? e->size : 0;
}

bool isFloat(DType dtype) {
  const DTypeEntry *e = lookup(dtype);
  return e && e->isFloat;
}

int64_t TensorInfo::numel() const {
  int64_t n = 0;
  std::string why;
  return checkedNumel(shape, n, why) ? n : -1;
}

// ---- reading ---------------------------------------------------------------------

File::~File() {
  if (map_)
    ::munmap(const_cast<uint8_t *>(map_), mapSize_);
}

const TensorInfo *File::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const uint8_t *File::data(const TensorInfo &t) const {
  return map_ + 8 + headerSize_ + t.offset;
}

namespace {

/// Reads and validates one header entry. Returns false with `why` set (the
/// caller prefixes the file name).
bool parseEntry(const std::string &name, const OrderedJson &entry,
                uint64_t dataSize, TensorInfo &info, std::string &why) {
  const std::string who = "tensor " + quote(name) + ": ";
  if (!entry.is_object()) {
    why = who + "header entry is " + jsonTypeName(entry) +
          ", expected an object with dtype, shape and data_offsets";
    return false;
  }
  info.name = name;

  // dtype
  auto dt = entry.find("dtype");
  if (dt == entry.end()) {
    why = who + "missing field 'dtype'";
    return false;
  }
  if (!dt->is_string()) {
    why = who + "field 'dtype' is " + jsonTypeName(*dt) +
          ", expected a string such as \"F32\"";
    return false;
  }
  const std::string &dtName = dt->get_ref<const std::string &>();
  std::optional<DType> dtype = parseDType(dtName);
  if (!dtype) {
    why = who + "unknown dtype " + quote(dtName) +
          " (expected one of BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, "
          "F64, I64, U64)";
    return false;
  }
  info.dtype = *dtype;

  // shape
  auto sh = entry.find("shape");
  if (sh == entry.end()) {
    why = who + "missing field 'shape'";
    return false;
  }
  if (!sh->is_array()) {
    why = who + "field 'shape' is " + jsonTypeName(*sh) +
          ", expected an array of non-negative integers";
    return false;
  }
  info.shape.clear();
  info.shape.reserve(sh->size());
  for (size_t i = 0; i < sh->size(); ++i) {
    const OrderedJson &d = (*sh)[i];
    const std::string at = who + "shape[" + std::to_string(i) + "]";
    if (d.is_number_unsigned()) {
      const uint64_t v = d.get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        why = at + " = " + std::to_string(v) + " is too large (exceeds int64)";
        return false;
      }
      info.shape.push_back(static_cast<int64_t>(v));
    } else if (d.is_number_integer()) {
      const int64_t v = d.get<int64_t>();
      if (v < 0) {
        why = at + " = " + std::to_string(v) +
              " is negative, expected a non-negative dimension";
        return false;
      }
      info.shape.push_back(v);
    } else {
      why = at + " is " + jsonTypeName(d) + ", expected a non-negative integer";
      return false;
    }
  }

  // data_offsets
  auto off = entry.find("data_offsets");
  if (off == entry.end()) {
    why = who + "missing field 'data_offsets'";
    return false;
  }
  if (!off->is_array() || off->size() != 2) {
    why = who + "field 'data_offsets' is " +
          (off->is_array() ? "an array of " + std::to_string(off->size()) +
                                 " elements"
                           : std::string(jsonTypeName(*off))) +
          ", expected an array [begin, end] of 2 non-negative integers";
    return false;
  }
  uint64_t bounds[2];
  for (int i = 0; i < 2; ++i) {
    const OrderedJson &v = (*off)[i];
    const std::string at =
        who + "data_offsets[" + std::to_string(i) + "] (" +
        (i == 0 ? "begin" : "end") + ")";
    if (v.is_number_unsigned()) {
      bounds[i] = v.get<uint64_t>();
    } else if (v.is_number_integer()) {
      why = at + " = " + std::to_string(v.get<int64_t>()) +
            " is negative, expected a non-negative integer";
      return false;
    } else {
      why = at + " is " + jsonTypeName(v) + ", expected a non-negative integer";
      return false;
    }
  }
  if (bounds[0] > bounds[1]) {
    why = who + "data_offsets [" + std::to_string(bounds[0]) + ", " +
          std::to_string(bounds[1]) + "] has begin > end";
    return false;
  }
  if (bounds[1] > dataSize) {
    why = who + "data_offsets end " + std::to_string(bounds[1]) +
          " exceeds the data section size " + std::to_string(dataSize) +
          " (file truncated?)";
    return false;
  }
  info.offset = bounds[0];
  info.bytes = bounds[1] - bounds[0];

  uint64_t expected = 0;
  std::string sizeWhy;
  if (!checkedByteSize(info.shape, info.dtype, expected, sizeWhy)) {
    why = who + sizeWhy;
    return false;
  }
  if (expected != info.bytes) {
    why = who + "data_offsets [" + std::to_string(bounds[0]) + ", " +
          std::to_string(bounds[1]) + "] span " + std::to_string(info.bytes) +
          " bytes, but shape " + shapeText(info.shape) + " of " +
          std::string(dtypeName(info.dtype)) + " needs " +
          std::to_string(expected) + " bytes (size mismatch)";
    return false;
  }
  return true;
}

} // namespace

std::unique_ptr<File> File::open(const std::string &path, std::string &error) {
  try {
    std::unique_ptr<File> file(new File());
    file->path_ = path;
    auto fail = [&](const std::string &why) -> std::unique_ptr<File> {
      error = path + ": " + why;
      return nullptr;
    };

    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
      return fail("cannot open: " + errnoString(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return fail("cannot stat: " + errnoString(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return fail("not a regular file");
    }
    const uint64_t fileSize = static_cast<uint64_t>(st.st_size);
    if (fileSize < 8) {
      ::close(fd);
      return fail("file is " + std::to_string(fileSize) +
                  " bytes, shorter than the 8-byte header length prefix");
    }
    if (fileSize > std::numeric_limits<size_t>::max()) {
      ::close(fd);
      return fail("file too large to map");
    }
    void *m = ::mmap(nullptr, static_cast<size_t>(fileSize), PROT_READ,
                     MAP_PRIVATE, fd, 0);
    const int mmapErr = errno;
    ::close(fd);
    if (m == MAP_FAILED)
      return fail("mmap failed: " + errnoString(mmapErr));
    file->map_ = static_cast<const uint8_t *>(m);
    file->mapSize_ = static_cast<size_t>(fileSize);

    const uint64_t headerSize = loadLE<uint64_t>(file->map_);
    if (headerSize > fileSize - 8)
      return fail("header length " + std::to_string(headerSize) +
                  " is larger than the file (" + std::to_string(fileSize) +
                  " bytes, " + std::to_string(fileSize - 8) +
                  " after the 8-byte prefix)");
    file->headerSize_ = headerSize;
    file->dataSize_ = fileSize - 8 - headerSize;

    // Parse the header. The callback only records duplicate top-level keys
    // (which the JSON library would otherwise silently merge).
    const char *begin = reinterpret_cast<const char *>(file->map_ + 8);
    const char *end = begin + headerSize;
    std::set<std::string> seenKeys;
    std::string duplicateKey;
    auto callback = [&](int depth, OrderedJson::parse_event_t event,
                        OrderedJson &parsed) {
      if (depth == 1 && event == OrderedJson::parse_event_t::key &&
          parsed.is_string() && duplicateKey.empty()) {
        const std::string &k = parsed.get_ref<const std::string &>();
        if (!seenKeys.insert(k).second)
          duplicateKey = k;
      }
      return true;
    };
    OrderedJson header;
    try {
      header = OrderedJson::parse(begin, end, callback,
                                  /*allow_exceptions=*/true,
                                  /*ignore_comments=*/false);
    } catch (const nlohmann::json::exception &e) {
      return fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (header.is_discarded())
      return fail("header is not valid JSON");
    if (!header.is_object())
      return fail(std::string("header is ") + jsonTypeName(header) +
                  ", expected a JSON object");
    if (!duplicateKey.empty())
      return fail("header has duplicate key " + quote(duplicateKey));

    std::vector<TensorInfo> tensors;
    tensors.reserve(header.size());
    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string &key = it.key();
      const OrderedJson &value = it.value();
      if (key == "__metadata__") {
        if (!value.is_object())
          return fail(std::string("__metadata__ is ") + jsonTypeName(value) +
                      ", expected an object of string values");
        for (auto m2 = value.begin(); m2 != value.end(); ++m2) {
          if (!m2->is_string())
            return fail("__metadata__ value for key " + quote(m2.key()) +
                        " is " + jsonTypeName(*m2) + ", expected a string");
          file->metadata_[m2.key()] = m2->get<std::string>();
        }
        continue;
      }
      TensorInfo info;
      std::string why;
      if (!parseEntry(key, value, file->dataSize_, info, why))
        return fail(why);
      tensors.push_back(std::move(info));
    }

    // File order; stable so zero-size ties keep the header order.
    std::stable_sort(tensors.begin(), tensors.end(),
                     [](const TensorInfo &a, const TensorInfo &b) {
                       if (a.offset != b.offset)
                         return a.offset < b.offset;
                       return a.bytes < b.bytes;
                     });
    // Overlap check over non-empty tensors (empty ranges overlap nothing).
    const TensorInfo *prev = nullptr;
    for (const TensorInfo &t : tensors) {
      if (t.bytes == 0)
        continue;
      if (prev && t.offset < prev->offset + prev->bytes)
        return fail("tensors " + quote(prev->name) + " [" +
                    std::to_string(prev->offset) + ", " +
                    std::to_string(prev->offset + prev->bytes) + ") and " +
                    quote(t.name) + " [" + std::to_string(t.offset) + ", " +
                    std::to_string(t.offset + t.bytes) +
                    ") have overlapping data_offsets");
      prev = &t;
    }

    file->tensors_ = std::move(tensors);
    for (size_t i = 0; i < file->tensors_.size(); ++i)
      file->index_.emplace(file->tensors_[i].name, i);
    return file;
  } catch (const std::bad_alloc &) {
    error = path + ": out of memory while reading the header";
  } catch (const std::exception &e) {
    error = path + ": " + e.what();
  } catch (...) {
    error = path + ": unknown error while reading";
  }
  return nullptr;
}

// ---- conversions -------------------------------------------------------------------

std::vector<double> toDoubles(const TensorInfo &t, const uint8_t *data) {
  std::vector<double> out;
  const size_t size = dtypeSize(t.dtype);
  if (size == 0 || (data == nullptr && t.bytes != 0))
    return out;
  try {
    const size_t n = static_cast<size_t>(t.bytes / size);
    out.resize(n);
    for (size_t i = 0; i < n; ++i) {
      const uint8_t *p = data + i * size;
      double v = 0;
      switch (t.dtype) {
      case DType::BOOL: v = *p ? 1.0 : 0.0; break;
      case DType::U8: v = *p; break;
      case DType::I8: v = static_cast<int8_t>(*p); break;
      case DType::I16: v = loadLE<int16_t>(p); break;
      case DType::U16: v = loadLE<uint16_t>(p); break;
      case DType::F16: v = detail::decodeSmallFloat<5, 10>(loadLE<uint16_t>(p)); break;
      case DType::BF16: v = detail::decodeSmallFloat<8, 7>(loadLE<uint16_t>(p)); break;
      case DType::I32: v = loadLE<int32_t>(p); break;
      case DType::U32: v = loadLE<uint32_t>(p); break;
      case DType::F32: v = loadLE<float>(p); break;
      case DType::F64: v = loadLE<double>(p); break;
      case DType::I64: v = static_cast<double>(loadLE<int64_t>(p)); break;
      case DType::U64: v = static_cast<double>(loadLE<uint64_t>(p)); break;
      }
      out[i] = v;
    }
  } catch (...) {
    out.clear();
  }
  return out;
}

namespace {

template <typename T>
bool encodeIntegers(const std::vector<double> &values, DType dtype,
                    std::vector<uint8_t> &out, std::string &error) {
  // [lo, hiExclusive) as doubles; both bounds are exact powers of two or
  // small integers, so the comparison is exact for every integral double.
  const double lo = static_cast<double>(std::numeric_limits<T>::min());
  const double hiExclusive =
      static_cast<double>(std::numeric_limits<T>::max()) + 1.0;
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v) || v != std::trunc(v)) {
      error = "value " + formatDouble(v) + " at index " + std::to_string(i) +
              " is not an integer, cannot encode as " +
              std::string(dtypeName(dtype));
      return false;
    }
    if (!(v >= lo && v < hiExclusive)) {
      error = "value " + formatDouble(v) + " at index " + std::to_string(i) +
              " is out of range for " + std::string(dtypeName(dtype));
      return false;
    }
    storeLE<T>(out.data() + i * sizeof(T), static_cast<T>(v));
  }
  return true;
}

} // namespace

bool fromDoubles(const std::vector<double> &values, DType dtype,
                 std::vector<uint8_t> &out, std::string &error) {
  try {
    const size_t size = dtypeSize(dtype);
    if (size == 0) {
      out.clear();
      error = "invalid dtype";
      return false;
    }
    out.assign(values.size() * size, 0);
    bool ok = true;
    switch (dtype) {
    case DType::BOOL:
      for (size_t i = 0; i < values.size() && ok; ++i) {
        if (values[i] == 0.0 || values[i] == 1.0) {
          out[i] = values[i] == 1.0 ? 1 : 0;
        } else {
          error = "value " + formatDouble(values[i]) + " at index " +
                  std::to_string(i) + " is not 0 or 1, cannot encode as BOOL";
          ok = false;
        }
      }
      break;
    case DType::U8: ok = encodeIntegers<uint8_t>(values, dtype, out, error); break;
    case DType::I8: ok = encodeIntegers<int8_t>(values, dtype, out, error); break;
    case DType::I16: ok = encodeIntegers<int16_t>(values, dtype, out, error); break;
    case DType::U16: ok = encodeIntegers<uint16_t>(values, dtype, out, error); break;
    case DType::I32: ok = encodeIntegers<int32_t>(values, dtype, out, error); break;
    case DType::U32: ok = encodeIntegers<uint32_t>(values, dtype, out, error); break;
    case DType::I64: ok = encodeIntegers<int64_t>(values, dtype, out, error); break;
    case DType::U64: ok = encodeIntegers<uint64_t>(values, dtype, out, error); break;
    case DType::F16:
      for (size_t i = 0; i < values.size(); ++i)
        storeLE<uint16_t>(out.data() + 2 * i, doubleToHalf(values[i]));
      break;
    case DType::BF16:
      for (size_t i = 0; i < values.size(); ++i)
        storeLE<uint16_t>(out.data() + 2 * i, doubleToBf16(values[i]));
      break;
    case DType::F32:
      for (size_t i = 0; i < values.size(); ++i)
        storeLE<float>(out.data() + 4 * i, static_cast<float>(values[i]));
      break;
    case DType::F64:
      for (size_t i = 0; i < values.size(); ++i)
        storeLE<double>(out.data() + 8 * i, values[i]);
      break;
    }
    if (!ok)
      out.clear();
    return ok;
  } catch (const std::exception &e) {
    out.clear();
    error = std::string("fromDoubles failed: ") + e.what();
  } catch (...) {
    out.clear();
    error = "fromDoubles failed";
  }
  return false;
}

// ---- writing -----------------------------------------------------------------------

namespace {

bool buildHeader(const std::vector<OwnedTensor> &tensors,
                 const std::map<std::string, std::string> &metadata,
                 std::string &headerText, std::string &error) {
  std::set<std::string_view> names;
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto &kv : metadata)
      meta[kv.first] = kv.second;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const OwnedTensor &t : tensors) {
    const std::string who = "tensor " + quote(t.name) + ": ";
    if (t.name.empty()) {
      error = "tensor names must not be empty";
      return false;
    }
    if (t.name == "__metadata__") {
      error = "tensor name '__metadata__' is reserved for metadata";
      return false;
    }
    if (!names.insert(t.name).second) {
      error = "duplicate tensor name " + quote(t.name);
      return false;
    }
    if (dtypeSize(t.dtype) == 0) {
      error = who + "invalid dtype";
      return false;
    }
    uint64_t expected = 0;
    std::string why;
    if (!checkedByteSize(t.shape, t.dtype, expected, why)) {
      error = who + why;
      return false;
    }
    if (expected != t.bytes.size()) {
      error = who + "has " + std::to_string(t.bytes.size()) +
              " bytes, but shape " + shapeText(t.shape) + " of " +
              std::string(dtypeName(t.dtype)) + " needs " +
              std::to_string(expected) + " bytes";
      return false;
    }
    if (offset > std::numeric_limits<uint64_t>::max() - expected) {
      error = who + "data section size overflows";
      return false;
    }
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = std::string(dtypeName(t.dtype));
    entry["shape"] = t.shape;
    entry["data_offsets"] = {offset, offset + expected};
    header[t.name] = std::move(entry);
    offset += expected;
  }
  try {
    headerText = header.dump(-1, ' ', /*ensure_ascii=*/false,
                             nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::type_error &e) {
    error = std::string("a tensor name or metadata string is not valid UTF-8 (") +
            e.what() + ")";
    return false;
  }
  // Pad with spaces so the data section starts 8-byte aligned.
  const size_t padded = (headerText.size() + 7) / 8 * 8;
  headerText.append(padded - headerText.size(), ' ');
  return true;
}

} // namespace

bool write(const std::string &path, const std::vector<OwnedTensor> &tensors,
           const std::map<std::string, std::string> &metadata,
           std::string &error) {
  auto fail = [&](const std::string &why) {
    error = path + ": " + why;
    return false;
  };
  try {
    std::string headerText;
    std::string why;
    if (!buildHeader(tensors, metadata, headerText, why))
      return fail(why);

    char prefix[8];
    storeLE<uint64_t>(reinterpret_cast<uint8_t *>(prefix),
                      static_cast<uint64_t>(headerText.size()));
    std::vector<std::string_view> pieces;
    pieces.reserve(2 + tensors.size());
    pieces.emplace_back(prefix, sizeof prefix);
    pieces.emplace_back(headerText);
    for (const OwnedTensor &t : tensors)
      if (!t.bytes.empty())
        pieces.emplace_back(reinterpret_cast<const char *>(t.bytes.data()),
                            t.bytes.size());
    if (!writeFileAtomically(path, pieces, why))
      return fail(why);
    return true;
  } catch (const std::bad_alloc &) {
    return fail("out of memory");
  } catch (const std::exception &e) {
    return fail(e.what());
  } catch (...) {
    return fail("unknown error while writing");
  }
}

} // namespace qtune::st
