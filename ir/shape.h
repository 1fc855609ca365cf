// Shapes whose dims are integers or symbols with compile-time upper bounds ("T", "S+1").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

namespace kiln {

/// A symbolic size known only per step (tokens `T`, sequences `S`, ...), bounded at compile time.
struct Symbol {
  std::string name;
  int64_t upper_bound = 0;
  bool operator==(const Symbol&) const = default;
};

/// One dimension: a constant, or a symbol plus a constant offset (`S+1` for CSR index arrays).
struct Dim {
  int64_t value = 0;   // the constant, or the offset added to the symbol
  std::string symbol;  // empty for a constant dim

  static Dim constant(int64_t v) { return Dim{v, ""}; }
  static Dim symbolic(std::string name, int64_t offset = 0) { return Dim{offset, std::move(name)}; }
  bool is_symbolic() const { return !symbol.empty(); }
  bool operator==(const Dim&) const = default;
  std::string to_string() const;
};

using Shape = std::vector<Dim>;

std::string shape_to_string(const Shape& shape);  // "[T,576]"

/// The symbols of a graph with their bounds; resolves dims to sizes.
class SymbolTable {
 public:
  absl::Status add(const Symbol& symbol);
  /// O(1): a hashed index beside the declaration-ordered list.
  const Symbol* find(std::string_view name) const;
  const std::vector<Symbol>& symbols() const { return symbols_; }

  /// The dim's upper bound: the constant, or the symbol's bound plus the offset.
  absl::StatusOr<int64_t> upper_bound(const Dim& dim) const;
  /// Product of upper bounds (element count of a buffer sized for the worst case).
  absl::StatusOr<int64_t> max_elements(const Shape& shape) const;

 private:
  std::vector<Symbol> symbols_;                     // in declaration order (the printer's order)
  absl::flat_hash_map<std::string, size_t> index_;  // name -> position in symbols_
};

/// Actual sizes of the symbols for one step ({"T": 7, "S": 2, ...}).
struct SymbolBindings {
  std::vector<std::pair<std::string, int64_t>> values;
  std::optional<int64_t> get(std::string_view name) const;
  void set(const std::string& name, int64_t value);
  absl::StatusOr<int64_t> resolve(const Dim& dim) const;
  absl::StatusOr<std::vector<int64_t>> resolve(const Shape& shape) const;
};

}  // namespace kiln
