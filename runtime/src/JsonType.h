//===- JsonType.h - JSON value kinds in error messages ---------*- C++ -*-===//
//
// Internal to the runtime's sources: "expected an object, got an array".
//
//===----------------------------------------------------------------------===//

#ifndef QTUNE_RUNTIME_SRC_JSONTYPE_H
#define QTUNE_RUNTIME_SRC_JSONTYPE_H

namespace qtune::rt {

/// "null", "a boolean", "a string", "an array", "an object", "a non-integer
/// number", "binary" or "an integer" (for any nlohmann JSON type).
template <typename Json> const char *jsonType(const Json &j) {
  switch (j.type()) {
  case Json::value_t::null: return "null";
  case Json::value_t::boolean: return "a boolean";
  case Json::value_t::string: return "a string";
  case Json::value_t::array: return "an array";
  case Json::value_t::object: return "an object";
  case Json::value_t::number_float: return "a non-integer number";
  case Json::value_t::binary: return "binary";
  default: return "an integer";
  }
}

} // namespace qtune::rt

#endif // QTUNE_RUNTIME_SRC_JSONTYPE_H
