// Typed node attributes: int, float, string, int list, dtype. Kept sorted by name so that
// printing is deterministic.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "ir/dtype.h"

namespace kiln {

using IntList = std::vector<int64_t>;
using Attribute = std::variant<int64_t, double, std::string, IntList, DType>;

std::string attribute_to_string(
    const Attribute& attr);  // IR text form: 16, 1e-05, "cos", [1, 2], bf16

class Attributes {
 public:
  void set(const std::string& name, Attribute value) { values_[name] = std::move(value); }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  void erase(const std::string& name) { values_.erase(name); }
  const std::map<std::string, Attribute>& all() const { return values_; }
  bool empty() const { return values_.empty(); }
  bool operator==(const Attributes&) const = default;

  // Typed getters: NotFound for a missing attribute, InvalidArgument for another kind.
  // get_float accepts an int attribute too (so `theta = 10000` is a valid float).
  absl::StatusOr<int64_t> get_int(const std::string& name) const;
  absl::StatusOr<double> get_float(const std::string& name) const;
  absl::StatusOr<std::string> get_string(const std::string& name) const;
  absl::StatusOr<IntList> get_int_list(const std::string& name) const;
  absl::StatusOr<DType> get_dtype(const std::string& name) const;

  int64_t int_or(const std::string& name, int64_t fallback) const;
  double float_or(const std::string& name, double fallback) const;
  std::string string_or(const std::string& name, const std::string& fallback) const;

 private:
  std::map<std::string, Attribute> values_;
};

}  // namespace kiln
