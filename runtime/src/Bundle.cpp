//===- Bundle.cpp - .qtb bundle loader and writer ---------------------------===//

#include "qtune/runtime/Bundle.h"

#include "qtune/runtime/AtomicFile.h"

#include <nlohmann/json.hpp>

#include "JsonType.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <set>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "qtune bundles assume a little-endian host"
#endif

namespace qtune::rt {

using Json = nlohmann::ordered_json;

namespace {

constexpr std::string_view kRoleNames[] = {"input",           "frozen",
                                           "trainable",       "optimizer_state",
                                           "output",          "temporary"};

std::string str(uint64_t v) { return std::to_string(v); }

uint64_t alignUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

std::string dims(const std::array<uint32_t, 3> &d) {
  return "[" + str(d[0]) + ", " + str(d[1]) + ", " + str(d[2]) + "]";
}


// ---- JSON -> BundleSpec (types and syntax) --------------------------------------

/// Reads typed fields out of JSON; the first failure is kept in `error`.
struct Reader {
  std::string error;

  bool fail(const std::string &field, const std::string &why) {
    error = field + ": " + why;
    return false;
  }

  const Json *member(const Json &obj, const std::string &field, const char *key) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      fail(field, std::string("missing key '") + key + "'");
      return nullptr;
    }
    return &*it;
  }

  bool object(const Json &j, const std::string &field) {
    return j.is_object() || fail(field, std::string("expected an object, got ") + jsonType(j));
  }

  bool array(const Json &j, const std::string &field) {
    return j.is_array() || fail(field, std::string("expected an array, got ") + jsonType(j));
  }

  bool string(const Json &j, const std::string &field, std::string &out) {
    if (!j.is_string())
      return fail(field, std::string("expected a string, got ") + jsonType(j));
    out = j.get<std::string>();
    return true;
  }

  /// Integer in [lo, hi].
  bool integer(const Json &j, const std::string &field, int64_t lo, uint64_t hi,
               uint64_t &bits) {
    if (j.is_number_unsigned()) {
      bits = j.get<uint64_t>();
      if (bits <= hi)
        return true;
      return fail(field, str(bits) + " is out of range [" + std::to_string(lo) + ", " + str(hi) + "]");
    }
    if (j.is_number_integer()) {
      const int64_t v = j.get<int64_t>();
      if (v >= lo && (v < 0 || static_cast<uint64_t>(v) <= hi)) {
        bits = static_cast<uint64_t>(v);
        return true;
      }
      return fail(field, std::to_string(v) + " is out of range [" + std::to_string(lo) +
                             ", " + str(hi) + "]");
    }
    return fail(field, std::string("expected an integer, got ") + jsonType(j));
  }
  bool u64(const Json &j, const std::string &field, uint64_t &out) {
    return integer(j, field, 0, std::numeric_limits<uint64_t>::max(), out);
  }
  bool u32(const Json &j, const std::string &field, uint32_t &out) {
    uint64_t v;
    if (!integer(j, field, 0, std::numeric_limits<uint32_t>::max(), v))
      return false;
    out = static_cast<uint32_t>(v);
    return true;
  }
  bool i64(const Json &j, const std::string &field, int64_t &out) {
    uint64_t v;
    if (!integer(j, field, std::numeric_limits<int64_t>::min(),
                 std::numeric_limits<int64_t>::max(), v))
      return false;
    out = static_cast<int64_t>(v);
    return true;
  }
  /// An id (range against the tables is checked by validateBundleSpec).
  bool id(const Json &j, const std::string &field, int &out) {
    uint64_t v;
    if (!integer(j, field, std::numeric_limits<int>::min(),
                 std::numeric_limits<int>::max(), v))
      return false;
    out = static_cast<int>(static_cast<int64_t>(v));
    return true;
  }
  bool dim3(const Json &j, const std::string &field, std::array<uint32_t, 3> &out) {
    if (!array(j, field))
      return false;
    if (j.size() != 3)
      return fail(field, "expected 3 integers, got " + str(j.size()));
    for (size_t i = 0; i < 3; ++i)
      if (!u32(j[i], field + "[" + str(i) + "]", out[i]))
        return false;
    return true;
  }
  bool ids(const Json &j, const std::string &field, std::vector<int> &out) {
    if (!array(j, field))
      return false;
    out.resize(j.size());
    for (size_t i = 0; i < j.size(); ++i)
      if (!id(j[i], field + "[" + str(i) + "]", out[i]))
        return false;
    return true;
  }

  bool arg(const Json &j, const std::string &field, Arg &a) {
    std::string kind;
    const Json *k = nullptr;
    if (!object(j, field) || !(k = member(j, field, "kind")) ||
        !string(*k, field + ".kind", kind))
      return false;
    if (kind == "ptr") {
      const Json *b = member(j, field, "buffer");
      a.kind = Arg::Kind::Ptr;
      if (!b || !id(*b, field + ".buffer", a.buffer))
        return false;
      // Optional: a byte offset into the buffer.
      return !j.contains("offset") || i64(j["offset"], field + ".offset", a.ivalue);
    }
    if (kind == "tensor_map") {
      a.kind = Arg::Kind::TensorMap;
      TensorMapSpec &m = a.map;
      const Json *b = nullptr, *rows = nullptr, *cols = nullptr, *rowBytes = nullptr,
                 *boxRows = nullptr, *boxCols = nullptr, *swizzle = nullptr;
      if (!(b = member(j, field, "buffer")) || !id(*b, field + ".buffer", a.buffer) ||
          (j.contains("offset") && !i64(j["offset"], field + ".offset", a.ivalue)) ||
          !(rows = member(j, field, "rows")) || !u64(*rows, field + ".rows", m.rows) ||
          !(cols = member(j, field, "cols")) || !u64(*cols, field + ".cols", m.cols) ||
          !(rowBytes = member(j, field, "row_bytes")) ||
          !u64(*rowBytes, field + ".row_bytes", m.rowBytes) ||
          !(boxRows = member(j, field, "box_rows")) ||
          !u32(*boxRows, field + ".box_rows", m.boxRows) ||
          !(boxCols = member(j, field, "box_cols")) ||
          !u32(*boxCols, field + ".box_cols", m.boxCols) ||
          !(swizzle = member(j, field, "swizzle")) || !u32(*swizzle, field + ".swizzle", m.swizzle))
        return false;
      return true;
    }
    const Json *v = member(j, field, "value");
    if (!v)
      return false;
    if (kind == "i64" || kind == "i32") {
      a.kind = kind == "i64" ? Arg::Kind::I64 : Arg::Kind::I32;
      return i64(*v, field + ".value", a.ivalue);
    }
    if (kind == "f32") {
      a.kind = Arg::Kind::F32;
      if (v->is_string()) { // non-finite values, which JSON cannot spell
        const std::string s = v->get<std::string>();
        if (s == "nan") a.fvalue = std::numeric_limits<float>::quiet_NaN();
        else if (s == "inf") a.fvalue = std::numeric_limits<float>::infinity();
        else if (s == "-inf") a.fvalue = -std::numeric_limits<float>::infinity();
        else return fail(field + ".value", "expected a number, \"nan\", \"inf\" or \"-inf\", got \"" + s + "\"");
        return true;
      }
      if (!v->is_number())
        return fail(field + ".value", std::string("expected a number, got ") + jsonType(*v));
      const double d = v->get<double>();
      if (std::fabs(d) > std::numeric_limits<float>::max())
        return fail(field + ".value", "value overflows f32");
      a.fvalue = static_cast<float>(d);
      return true;
    }
    return fail(field + ".kind", "unknown argument kind '" + kind +
                                     "' (expected ptr, tensor_map, i64, i32 or f32)");
  }

  bool header(const Json &h, BundleSpec &spec, std::vector<BlobRef> &blobs) {
    const Json *j = nullptr;
    if (!object(h, "header"))
      return false;
    if (!(j = member(h, "header", "target")) || !string(*j, "target", spec.target))
      return false;

    if (!(j = member(h, "header", "blobs")) || !array(*j, "blobs"))
      return false;
    blobs.resize(j->size());
    for (size_t i = 0; i < j->size(); ++i) {
      const std::string f = "blobs[" + str(i) + "]";
      const Json &b = (*j)[i];
      const Json *o = nullptr, *n = nullptr;
      if (!object(b, f) || !(o = member(b, f, "offset")) || !u64(*o, f + ".offset", blobs[i].offset) ||
          !(n = member(b, f, "bytes")) || !u64(*n, f + ".bytes", blobs[i].bytes))
        return false;
    }

    if (!(j = member(h, "header", "kernels")) || !array(*j, "kernels"))
      return false;
    spec.kernels.resize(j->size());
    for (size_t i = 0; i < j->size(); ++i) {
      const std::string f = "kernels[" + str(i) + "]";
      const Json &k = (*j)[i];
      Kernel &kernel = spec.kernels[i];
      const Json *name = nullptr, *ptx = nullptr, *cubin = nullptr, *block = nullptr, *shared = nullptr;
      if (!object(k, f) || !(name = member(k, f, "name")) || !string(*name, f + ".name", kernel.name) ||
          !(ptx = member(k, f, "ptx")) || !id(*ptx, f + ".ptx", kernel.ptx) ||
          !(cubin = member(k, f, "cubin")) || !id(*cubin, f + ".cubin", kernel.cubin) ||
          !(block = member(k, f, "block")) || !dim3(*block, f + ".block", kernel.block) ||
          !(shared = member(k, f, "shared_bytes")) || !u32(*shared, f + ".shared_bytes", kernel.sharedBytes))
        return false;
    }

    if (!(j = member(h, "header", "arena_bytes")) || !u64(*j, "arena_bytes", spec.arenaBytes))
      return false;

    if (!(j = member(h, "header", "buffers")) || !array(*j, "buffers"))
      return false;
    spec.buffers.resize(j->size());
    for (size_t i = 0; i < j->size(); ++i) {
      const std::string f = "buffers[" + str(i) + "]";
      const Json &b = (*j)[i];
      Buffer &buf = spec.buffers[i];
      const Json *name = nullptr, *off = nullptr, *bytes = nullptr, *dtype = nullptr, *shape = nullptr, *role = nullptr;
      std::string dtypeText, roleText;
      if (!object(b, f) || !(name = member(b, f, "name")) || !string(*name, f + ".name", buf.name) ||
          !(off = member(b, f, "offset")) || !u64(*off, f + ".offset", buf.offset) ||
          !(bytes = member(b, f, "bytes")) || !u64(*bytes, f + ".bytes", buf.bytes) ||
          !(dtype = member(b, f, "dtype")) || !string(*dtype, f + ".dtype", dtypeText) ||
          !(shape = member(b, f, "shape")) || !array(*shape, f + ".shape") ||
          !(role = member(b, f, "role")) || !string(*role, f + ".role", roleText))
        return false;
      const auto dt = st::parseDType(dtypeText);
      if (!dt)
        return fail(f + ".dtype", "unknown dtype '" + dtypeText + "'");
      buf.dtype = *dt;
      const auto r = parseRole(roleText);
      if (!r)
        return fail(f + ".role", "unknown role '" + roleText +
                                     "' (expected input, frozen, trainable, "
                                     "optimizer_state, output or temporary)");
      buf.role = *r;
      buf.shape.resize(shape->size());
      for (size_t d = 0; d < shape->size(); ++d)
        if (!i64((*shape)[d], f + ".shape[" + str(d) + "]", buf.shape[d]))
          return false;
    }

    if (!(j = member(h, "header", "entries")) || !object(*j, "entries"))
      return false;
    for (auto it = j->begin(); it != j->end(); ++it) {
      const std::string f = "entries." + it.key();
      const Json &e = it.value();
      Entry &entry = spec.entries[it.key()];
      const Json *in = nullptr, *par = nullptr, *out = nullptr, *launches = nullptr;
      if (!object(e, f) || !(in = member(e, f, "inputs")) || !ids(*in, f + ".inputs", entry.inputs) ||
          !(par = member(e, f, "params")) || !ids(*par, f + ".params", entry.params) ||
          !(out = member(e, f, "outputs")) || !ids(*out, f + ".outputs", entry.outputs) ||
          !(launches = member(e, f, "launches")) || !array(*launches, f + ".launches"))
        return false;
      entry.launches.resize(launches->size());
      for (size_t i = 0; i < launches->size(); ++i) {
        const std::string lf = f + ".launches[" + str(i) + "]";
        const Json &l = (*launches)[i];
        Launch &launch = entry.launches[i];
        const Json *kernel = nullptr, *grid = nullptr, *block = nullptr, *shared = nullptr, *args = nullptr;
        if (!object(l, lf) || !(kernel = member(l, lf, "kernel")) || !id(*kernel, lf + ".kernel", launch.kernel) ||
            !(grid = member(l, lf, "grid")) || !dim3(*grid, lf + ".grid", launch.grid) ||
            !(block = member(l, lf, "block")) || !dim3(*block, lf + ".block", launch.block) ||
            !(shared = member(l, lf, "shared_bytes")) || !u32(*shared, lf + ".shared_bytes", launch.sharedBytes) ||
            !(args = member(l, lf, "args")) || !array(*args, lf + ".args"))
          return false;
        launch.args.resize(args->size());
        for (size_t a = 0; a < args->size(); ++a)
          if (!arg((*args)[a], lf + ".args[" + str(a) + "]", launch.args[a]))
            return false;
        auto family = l.find("family");
        if (family != l.end()) {
          if (!family->is_string())
            return fail(lf + ".family", std::string("expected a string, got ") + jsonType(*family));
          launch.family = family->get<std::string>();
        }
      }
    }

    auto p = h.find("peft");
    if (p != h.end()) {
      spec.peft.emplace();
      if (!peft(*p, *spec.peft))
        return false;
    }
    return true;
  }

  /// The "peft" object: types here, values in validateBundleSpec.
  bool peft(const Json &p, PeftConfig &c) {
    const Json *j = nullptr;
    if (!object(p, "peft"))
      return false;
    if (!(j = member(p, "peft", "r")) || !i64(*j, "peft.r", c.r))
      return false;
    if (!(j = member(p, "peft", "lora_alpha")))
      return false;
    if (!j->is_number())
      return fail("peft.lora_alpha", std::string("expected a number, got ") + jsonType(*j));
    c.loraAlpha = j->get<double>();
    auto d = p.find("lora_dropout"); // optional, 0 when absent
    if (d != p.end()) {
      if (!d->is_number())
        return fail("peft.lora_dropout", std::string("expected a number, got ") + jsonType(*d));
      c.loraDropout = d->get<double>();
    }
    if (!(j = member(p, "peft", "target_modules")) || !array(*j, "peft.target_modules"))
      return false;
    c.targetModules.resize(j->size());
    for (size_t i = 0; i < j->size(); ++i)
      if (!string((*j)[i], "peft.target_modules[" + str(i) + "]", c.targetModules[i]))
        return false;
    auto b = p.find("base_model_name_or_path"); // optional; null means unknown
    if (b != p.end() && !b->is_null() &&
        !string(*b, "peft.base_model_name_or_path", c.baseModelNameOrPath))
      return false;
    return true;
  }
};

// ---- BundleSpec -> JSON -----------------------------------------------------------

Json dimsJson(const std::array<uint32_t, 3> &d) { return Json::array({d[0], d[1], d[2]}); }

/// An integral value as a JSON integer (PEFT writes lora_alpha as an int).
Json numberJson(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9007199254740992.0)
    return Json(static_cast<int64_t>(v));
  return Json(v);
}

Json peftJson(const PeftConfig &c) {
  Json p = Json::object();
  p["r"] = c.r;
  p["lora_alpha"] = numberJson(c.loraAlpha);
  p["lora_dropout"] = c.loraDropout;
  p["target_modules"] = c.targetModules;
  if (!c.baseModelNameOrPath.empty())
    p["base_model_name_or_path"] = c.baseModelNameOrPath;
  return p;
}

Json toJson(const BundleSpec &spec, const std::vector<BlobRef> &blobs) {
  Json h = Json::object();
  h["target"] = spec.target;
  h["blobs"] = Json::array();
  for (const BlobRef &b : blobs)
    h["blobs"].push_back({{"offset", b.offset}, {"bytes", b.bytes}});
  h["kernels"] = Json::array();
  for (const Kernel &k : spec.kernels)
    h["kernels"].push_back({{"name", k.name},
                            {"ptx", k.ptx},
                            {"cubin", k.cubin},
                            {"block", dimsJson(k.block)},
                            {"shared_bytes", k.sharedBytes}});
  h["arena_bytes"] = spec.arenaBytes;
  h["buffers"] = Json::array();
  for (const Buffer &b : spec.buffers)
    h["buffers"].push_back({{"name", b.name},
                            {"offset", b.offset},
                            {"bytes", b.bytes},
                            {"dtype", std::string(st::dtypeName(b.dtype))},
                            {"shape", b.shape},
                            {"role", std::string(roleName(b.role))}});
  h["entries"] = Json::object();
  for (const auto &[name, e] : spec.entries) {
    Json launches = Json::array();
    for (const Launch &l : e.launches) {
      Json args = Json::array();
      for (const Arg &a : l.args) {
        switch (a.kind) {
        case Arg::Kind::Ptr:
          if (a.ivalue)
            args.push_back({{"kind", "ptr"}, {"buffer", a.buffer}, {"offset", a.ivalue}});
          else
            args.push_back({{"kind", "ptr"}, {"buffer", a.buffer}});
          break;
        case Arg::Kind::TensorMap: {
          Json t = {{"kind", "tensor_map"}, {"buffer", a.buffer}};
          if (a.ivalue)
            t["offset"] = a.ivalue;
          t["rows"] = a.map.rows;
          t["cols"] = a.map.cols;
          t["row_bytes"] = a.map.rowBytes;
          t["box_rows"] = a.map.boxRows;
          t["box_cols"] = a.map.boxCols;
          t["swizzle"] = a.map.swizzle;
          args.push_back(std::move(t));
          break;
        }
        case Arg::Kind::I64: args.push_back({{"kind", "i64"}, {"value", a.ivalue}}); break;
        case Arg::Kind::I32: args.push_back({{"kind", "i32"}, {"value", a.ivalue}}); break;
        case Arg::Kind::F32:
          if (std::isnan(a.fvalue))
            args.push_back({{"kind", "f32"}, {"value", "nan"}});
          else if (std::isinf(a.fvalue))
            args.push_back({{"kind", "f32"}, {"value", a.fvalue > 0 ? "inf" : "-inf"}});
          else
            args.push_back({{"kind", "f32"}, {"value", static_cast<double>(a.fvalue)}});
          break;
        }
      }
      Json launch = {{"kernel", l.kernel},
                     {"grid", dimsJson(l.grid)},
                     {"block", dimsJson(l.block)},
                     {"shared_bytes", l.sharedBytes},
                     {"args", std::move(args)}};
      if (!l.family.empty())
        launch["family"] = l.family;
      launches.push_back(std::move(launch));
    }
    h["entries"][name] = {{"inputs", e.inputs},
                          {"params", e.params},
                          {"outputs", e.outputs},
                          {"launches", std::move(launches)}};
  }
  if (spec.peft)
    h["peft"] = peftJson(*spec.peft);
  return h;
}

// ---- semantic checks ----------------------------------------------------------------

bool checkId(int id, size_t count, const char *what, const std::string &field,
             std::string &error) {
  if (id >= 0 && static_cast<size_t>(id) < count)
    return true;
  error = field + ": " + what + " id " + std::to_string(id) + " out of range (" +
          str(count) + " " + what + (count == 1 ? ")" : "s)");
  return false;
}

bool checkBlock(const std::array<uint32_t, 3> &b, const std::string &field,
                std::string &error) {
  const uint64_t threads = uint64_t(b[0]) * b[1] * b[2];
  if (threads == 0)
    error = field + ": block " + dims(b) + " has a zero dimension";
  else if (threads > kMaxThreadsPerBlock)
    error = field + ": block " + dims(b) + " has " + str(threads) +
            " threads (at most " + str(kMaxThreadsPerBlock) + ")";
  else if (b[2] > kMaxBlockDimZ)
    error = field + ": block.z " + str(b[2]) + " exceeds " + str(kMaxBlockDimZ);
  else
    return true;
  return false;
}

bool checkShared(uint32_t bytes, const std::string &field, std::string &error) {
  if (bytes <= kMaxSharedBytes)
    return true;
  error = field + ": " + str(bytes) + " bytes of shared memory exceed the limit of " +
          str(kMaxSharedBytes) + " (227 KiB)";
  return false;
}

/// The values of a tensor_map argument whose buffer id and offset are already
/// checked: what cuTensorMapEncodeTiled accepts for a 2-D bf16 tiled map, with
/// the window inside the buffer.
bool checkTensorMap(const Arg &arg, const Buffer &b, const std::string &field,
                    std::string &error) {
  const TensorMapSpec &m = arg.map;
  auto fail = [&](const std::string &why) {
    error = field + ": tensor_map " + why;
    return false;
  };
  constexpr uint64_t kMaxDim = uint64_t(1) << 32; // globalDim limit
  constexpr uint64_t kMaxRowBytes = uint64_t(1) << 40; // globalStrides limit
  constexpr uint32_t kMaxBox = 256;
  if (b.dtype != st::DType::BF16)
    return fail("buffer '" + b.name + "' has dtype " + std::string(st::dtypeName(b.dtype)) +
                " (tensor maps read BF16 buffers)");
  if (m.rows < 1 || m.rows > kMaxDim)
    return fail("rows " + str(m.rows) + " must be in [1, 2^32]");
  if (m.cols < 1 || m.cols > kMaxDim)
    return fail("cols " + str(m.cols) + " must be in [1, 2^32]");
  if (m.rowBytes == 0 || m.rowBytes % 16 != 0 || m.rowBytes >= kMaxRowBytes)
    return fail("row_bytes " + str(m.rowBytes) + " must be a positive multiple of 16 below 2^40");
  if (m.cols > m.rowBytes / 2)
    return fail("cols " + str(m.cols) + " (" + str(m.cols * 2) + " bytes) exceed row_bytes " +
                str(m.rowBytes));
  // The last byte read is offset + (rows - 1) * row_bytes + cols * 2; with the
  // limits above (rows <= 2^32, row_bytes < 2^40) this fits in 128 bits, not 64.
  const uint64_t offset = static_cast<uint64_t>(arg.ivalue); // checked: 0 <= offset
  uint64_t end = 0;
  const bool overflow = __builtin_mul_overflow(m.rows - 1, m.rowBytes, &end) ||
                        __builtin_add_overflow(end, offset + m.cols * 2, &end);
  if (overflow || end > b.bytes)
    return fail(str(m.rows) + "x" + str(m.cols) + " with row_bytes " + str(m.rowBytes) +
                " at offset " + str(offset) + " ends at byte " +
                (overflow ? std::string("2^64 or more") : str(end)) + ", past the end of buffer '" +
                b.name + "' (" + str(b.bytes) + " bytes)");
  if (m.boxRows < 1 || m.boxRows > kMaxBox)
    return fail("box_rows " + str(m.boxRows) + " must be in [1, 256]");
  if (m.boxCols < 1 || m.boxCols > kMaxBox)
    return fail("box_cols " + str(m.boxCols) + " must be in [1, 256]");
  if (m.boxCols * 2 % 16 != 0)
    return fail("box_cols " + str(m.boxCols) + " (" + str(m.boxCols * 2) +
                " bytes) must span a multiple of 16 bytes");
  if (m.swizzle != 0 && m.swizzle != 32 && m.swizzle != 64 && m.swizzle != 128)
    return fail("swizzle " + str(m.swizzle) + " must be 0, 32, 64 or 128");
  if (m.swizzle != 0 && m.boxCols * 2 > m.swizzle)
    return fail("box_cols " + str(m.boxCols) + " (" + str(m.boxCols * 2) +
                " bytes) exceed the " + str(m.swizzle) + "-byte swizzle span");
  return true;
}

} // namespace

// ---- public API -------------------------------------------------------------------

std::string_view roleName(BufferRole role) {
  return kRoleNames[static_cast<size_t>(role)];
}

std::optional<BufferRole> parseRole(std::string_view name) {
  for (size_t i = 0; i < std::size(kRoleNames); ++i)
    if (kRoleNames[i] == name)
      return static_cast<BufferRole>(i);
  return std::nullopt;
}

int BundleSpec::findBuffer(std::string_view name) const {
  for (size_t i = 0; i < buffers.size(); ++i)
    if (buffers[i].name == name)
      return static_cast<int>(i);
  return -1;
}

std::string_view Bundle::blob(int id) const {
  if (id < 0 || static_cast<size_t>(id) >= blobs.size())
    return {};
  return std::string_view(fileBytes).substr(blobs[id].offset, blobs[id].bytes);
}

bool validateBundleSpec(const BundleSpec &spec, size_t numBlobs, std::string &error) {
  if (spec.target.empty()) {
    error = "target: must not be empty";
    return false;
  }
  for (size_t i = 0; i < spec.kernels.size(); ++i) {
    const Kernel &k = spec.kernels[i];
    const std::string f = "kernels[" + str(i) + "]";
    if (k.name.empty()) {
      error = f + ".name: must not be empty";
      return false;
    }
    if (!checkId(k.ptx, numBlobs, "blob", f + ".ptx", error) ||
        (k.cubin != -1 && !checkId(k.cubin, numBlobs, "blob", f + ".cubin", error)) ||
        !checkBlock(k.block, f + ".block", error) ||
        !checkShared(k.sharedBytes, f + ".shared_bytes", error))
      return false;
  }

  for (size_t i = 0; i < spec.buffers.size(); ++i) {
    const Buffer &b = spec.buffers[i];
    const std::string f = "buffers[" + str(i) + "]";
    auto fail = [&](const std::string &why) {
      error = f + " ('" + b.name + "'): " + why;
      return false;
    };
    if (b.name.empty()) {
      error = f + ".name: must not be empty";
      return false;
    }
    if (b.offset % kBufferAlignment != 0)
      return fail("offset " + str(b.offset) + " is not a multiple of " + str(kBufferAlignment));
    if (b.offset > spec.arenaBytes || b.bytes > spec.arenaBytes - b.offset)
      return fail("[" + str(b.offset) + ", " + str(b.offset) + " + " + str(b.bytes) +
                  ") lies outside the arena (" + str(spec.arenaBytes) + " bytes)");
    st::TensorInfo t;
    t.dtype = b.dtype;
    t.shape = b.shape;
    const int64_t numel = t.numel();
    if (numel < 0)
      return fail("shape has a negative dimension or too many elements");
    const uint64_t size = st::dtypeSize(b.dtype);
    if (static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / size ||
        static_cast<uint64_t>(numel) * size != b.bytes)
      return fail("bytes " + str(b.bytes) + " != " + std::to_string(numel) + " elements x " +
                  str(size) + " bytes (" + std::string(st::dtypeName(b.dtype)) + ")");
  }

  for (const auto &[name, e] : spec.entries) {
    const std::string f = "entries." + name;
    if (name.empty()) {
      error = "entries: an entry has an empty name";
      return false;
    }
    // Inputs and params are loaded by name into their buffers, so a name may
    // appear only once across both; outputs are written by name.
    std::set<std::string> loaded, written;
    auto checkList = [&](const std::vector<int> &ids, const char *list,
                         std::set<std::string> &seen) {
      for (size_t i = 0; i < ids.size(); ++i) {
        const std::string lf = f + "." + list + "[" + str(i) + "]";
        if (!checkId(ids[i], spec.buffers.size(), "buffer", lf, error))
          return false;
        const std::string &bname = spec.buffers[ids[i]].name;
        if (!seen.insert(bname).second) {
          error = lf + ": buffer '" + bname + "' is listed twice";
          return false;
        }
      }
      return true;
    };
    if (!checkList(e.inputs, "inputs", loaded) || !checkList(e.params, "params", loaded) ||
        !checkList(e.outputs, "outputs", written))
      return false;

    for (size_t i = 0; i < e.launches.size(); ++i) {
      const Launch &l = e.launches[i];
      const std::string lf = f + ".launches[" + str(i) + "]";
      if (!checkId(l.kernel, spec.kernels.size(), "kernel", lf + ".kernel", error))
        return false;
      const auto &g = l.grid;
      if (uint64_t(g[0]) * g[1] * g[2] == 0) {
        error = lf + ".grid: grid " + dims(g) + " has a zero dimension";
        return false;
      }
      if (g[0] > kMaxGridDimX || g[1] > kMaxGridDimYZ || g[2] > kMaxGridDimYZ) {
        error = lf + ".grid: grid " + dims(g) + " exceeds CUDA's limits [" +
                str(kMaxGridDimX) + ", " + str(kMaxGridDimYZ) + ", " + str(kMaxGridDimYZ) + "]";
        return false;
      }
      if (!checkBlock(l.block, lf + ".block", error) ||
          !checkShared(l.sharedBytes, lf + ".shared_bytes", error))
        return false;
      for (size_t a = 0; a < l.args.size(); ++a) {
        const Arg &arg = l.args[a];
        const std::string af = lf + ".args[" + str(a) + "]";
        const bool pointsIntoBuffer =
            arg.kind == Arg::Kind::Ptr || arg.kind == Arg::Kind::TensorMap;
        if (pointsIntoBuffer && !checkId(arg.buffer, spec.buffers.size(), "buffer", af, error))
          return false;
        if (pointsIntoBuffer && arg.ivalue != 0 &&
            (arg.ivalue < 0 || arg.ivalue % 16 != 0 ||
             static_cast<uint64_t>(arg.ivalue) >= spec.buffers[arg.buffer].bytes)) {
          error = af + ": offset " + std::to_string(arg.ivalue) + " into buffer '" +
                  spec.buffers[arg.buffer].name + "' (" +
                  std::to_string(spec.buffers[arg.buffer].bytes) +
                  " bytes) must be a multiple of 16 inside the buffer";
          return false;
        }
        if (arg.kind == Arg::Kind::TensorMap &&
            !checkTensorMap(arg, spec.buffers[arg.buffer], af, error))
          return false;
        if (arg.kind == Arg::Kind::I32 &&
            (arg.ivalue < std::numeric_limits<int32_t>::min() ||
             arg.ivalue > std::numeric_limits<int32_t>::max())) {
          error = af + ": i32 value " + std::to_string(arg.ivalue) + " does not fit in 32 bits";
          return false;
        }
      }
    }
  }
  if (spec.peft && !validatePeftConfig(*spec.peft, error)) {
    error = "peft." + error;
    return false;
  }
  return true;
}

bool validatePeftConfig(const PeftConfig &c, std::string &error) {
  auto number = [](double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", v);
    return std::string(buf);
  };
  if (c.r < 1 || c.r > std::numeric_limits<int32_t>::max()) {
    error = "r: must be a positive integer (got " + std::to_string(c.r) + ")";
    return false;
  }
  if (!std::isfinite(c.loraAlpha) || c.loraAlpha <= 0) {
    error = "lora_alpha: must be finite and positive (got " + number(c.loraAlpha) + ")";
    return false;
  }
  if (!(c.loraDropout >= 0 && c.loraDropout < 1)) {
    error = "lora_dropout: must be in [0, 1) (got " + number(c.loraDropout) + ")";
    return false;
  }
  if (c.targetModules.empty()) {
    error = "target_modules: must name at least one module";
    return false;
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < c.targetModules.size(); ++i) {
    if (c.targetModules[i].empty()) {
      error = "target_modules[" + str(i) + "]: must not be empty";
      return false;
    }
    if (!seen.insert(c.targetModules[i]).second) {
      error = "target_modules[" + str(i) + "]: '" + c.targetModules[i] + "' is listed twice";
      return false;
    }
  }
  return true;
}

std::unique_ptr<Bundle> loadBundle(const std::string &path, std::string &error) {
  auto fail = [&](const std::string &why) -> std::unique_ptr<Bundle> {
    error = path + ": " + why;
    return nullptr;
  };
  try {
    auto bundle = std::make_unique<Bundle>();
    bundle->path = path;
    std::ifstream in(path, std::ios::binary);
    if (!in)
      return fail(std::string("cannot open: ") + std::strerror(errno));
    bundle->fileBytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    if (in.bad())
      return fail("read error");
    const std::string &file = bundle->fileBytes;
    const uint64_t fileSize = file.size();

    if (fileSize >= 8 && std::memcmp(file.data(), kBundleMagic, 8) != 0)
      return fail("magic: not a qtune bundle (expected \"QTUNEBDL\")");
    if (fileSize < kBundleFixedHeaderBytes)
      return fail("file is " + str(fileSize) + " bytes, shorter than the " +
                  str(kBundleFixedHeaderBytes) + "-byte fixed header");
    uint32_t version, reserved;
    uint64_t headerBytes;
    std::memcpy(&version, file.data() + 8, 4);
    std::memcpy(&reserved, file.data() + 12, 4);
    std::memcpy(&headerBytes, file.data() + 16, 8);
    bundle->version = version;
    if (version != kBundleVersion)
      return fail("version: unsupported bundle version " + str(version) + " (this runtime reads " +
                  str(kBundleVersion) + ")");
    if (reserved != 0)
      return fail("reserved: expected 0, got " + str(reserved));
    if (headerBytes > fileSize - kBundleFixedHeaderBytes)
      return fail("header: length " + str(headerBytes) + " extends past the end of the file (" +
                  str(fileSize) + " bytes)");
    const uint64_t headerEnd = kBundleFixedHeaderBytes + headerBytes;

    Json h = Json::parse(file.begin() + kBundleFixedHeaderBytes, file.begin() + headerEnd,
                         nullptr, /*allow_exceptions=*/false);
    if (h.is_discarded())
      return fail("header: not valid JSON");
    Reader reader;
    if (!reader.header(h, *bundle, bundle->blobs))
      return fail(reader.error);

    for (size_t i = 0; i < bundle->blobs.size(); ++i) {
      const BlobRef &b = bundle->blobs[i];
      const std::string f = "blobs[" + str(i) + "]";
      if (b.offset % kBlobAlignment != 0)
        return fail(f + ".offset: " + str(b.offset) + " is not a multiple of " + str(kBlobAlignment));
      if (b.offset < headerEnd)
        return fail(f + ".offset: " + str(b.offset) + " lies inside the header (which ends at " +
                    str(headerEnd) + ")");
      if (b.offset > fileSize || b.bytes > fileSize - b.offset)
        return fail(f + ": [" + str(b.offset) + ", " + str(b.offset) + " + " + str(b.bytes) +
                    ") extends past the end of the file (" + str(fileSize) + " bytes)");
    }
    std::string why;
    if (!validateBundleSpec(*bundle, bundle->blobs.size(), why))
      return fail(why);
    return bundle;
  } catch (const std::bad_alloc &) {
    return fail("out of memory");
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}

namespace {

/// Layout: header padded with spaces so the first blob starts at a 64-byte
/// boundary, then each blob at the next 64-byte boundary.
std::string layout(const BundleSpec &spec, const std::vector<std::string> &blobs,
                   std::vector<BlobRef> &refs, bool pad) {
  refs.assign(blobs.size(), BlobRef{});
  uint64_t start = kBundleFixedHeaderBytes;
  for (;;) { // offsets only grow, so this settles after a couple of rounds
    uint64_t off = alignUp(start, kBlobAlignment);
    for (size_t i = 0; i < blobs.size(); ++i) {
      refs[i] = {off, blobs[i].size()};
      off = alignUp(off + blobs[i].size(), kBlobAlignment);
    }
    std::string text = toJson(spec, refs).dump();
    const uint64_t end = kBundleFixedHeaderBytes + text.size();
    if (end <= alignUp(start, kBlobAlignment)) {
      if (pad)
        text.append(alignUp(start, kBlobAlignment) - end, ' ');
      return text;
    }
    start = end;
  }
}

} // namespace

std::string bundleHeaderJson(const BundleSpec &spec, const std::vector<std::string> &blobs) {
  try {
    std::vector<BlobRef> refs;
    return layout(spec, blobs, refs, /*pad=*/false);
  } catch (const std::exception &) {
    return std::string();
  }
}

bool writeBundle(const std::string &path, const BundleSpec &spec,
                 const std::vector<std::string> &blobs, std::string &error) {
  auto fail = [&](const std::string &why) {
    error = path + ": " + why;
    return false;
  };
  try {
    std::string why;
    if (!validateBundleSpec(spec, blobs.size(), why))
      return fail(why);

    std::vector<BlobRef> refs;
    const std::string header = layout(spec, blobs, refs, /*pad=*/true);
    std::string file(kBundleMagic, 8);
    const uint32_t version = kBundleVersion, reserved = 0;
    const uint64_t headerBytes = header.size();
    file.append(reinterpret_cast<const char *>(&version), 4);
    file.append(reinterpret_cast<const char *>(&reserved), 4);
    file.append(reinterpret_cast<const char *>(&headerBytes), 8);
    file += header;
    for (size_t i = 0; i < blobs.size(); ++i) {
      file.resize(refs[i].offset, '\0');
      file += blobs[i];
    }

    if (!writeFileAtomically(path, {file}, why))
      return fail(why);
    return true;
  } catch (const std::bad_alloc &) {
    return fail("out of memory");
  } catch (const std::exception &e) {
    return fail(e.what());
  }
}

int BundleWriter::addBlob(std::string bytes) {
  blobs.push_back(std::move(bytes));
  return static_cast<int>(blobs.size() - 1);
}

int BundleWriter::addKernel(Kernel kernel) {
  spec.kernels.push_back(std::move(kernel));
  return static_cast<int>(spec.kernels.size() - 1);
}

int BundleWriter::addBuffer(Buffer buffer) {
  spec.buffers.push_back(std::move(buffer));
  return static_cast<int>(spec.buffers.size() - 1);
}

Entry &BundleWriter::entry(const std::string &name) { return spec.entries[name]; }

} // namespace qtune::rt
