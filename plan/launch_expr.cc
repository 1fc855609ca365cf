// Recursive-descent evaluator of launch-rule expressions (see launch_expr.h).
#include "plan/launch_expr.h"

#include <algorithm>
#include <cctype>
#include <tuple>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

class ExprEval {
 public:
  ExprEval(std::string_view s, const LaunchSymbols& syms) : s_(s), syms_(syms) {}  // copies s

  absl::StatusOr<int64_t> run() {
    absl::StatusOr<int64_t> v = expr();
    skip();
    if (v.ok() && i_ != s_.size()) return err("end of expression");
    return v;
  }

 private:
  absl::Status err(const char* want) const {
    return absl::InvalidArgumentError(
        absl::StrCat("launch expression \"", s_, "\" col ", i_ + 1, ": expected ", want));
  }
  absl::Status overflow(const char* op) const {
    return absl::OutOfRangeError(
        absl::StrCat("launch expression \"", s_, "\": ", op, " overflows int64 near col ", i_ + 1));
  }
  void skip() {
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }

  absl::StatusOr<int64_t> expr() {
    absl::StatusOr<int64_t> v = term();
    while (v.ok()) {
      const bool plus = eat('+');
      if (!plus && !eat('-')) break;
      absl::StatusOr<int64_t> r = term();
      if (!r.ok()) return r;
      int64_t out = 0;
      if (plus ? __builtin_add_overflow(*v, *r, &out) : __builtin_sub_overflow(*v, *r, &out)) {
        return overflow(plus ? "+" : "-");
      }
      *v = out;
    }
    return v;
  }

  absl::StatusOr<int64_t> term() {
    absl::StatusOr<int64_t> v = atom();
    while (v.ok() && eat('*')) {
      absl::StatusOr<int64_t> r = atom();
      if (!r.ok()) return r;
      int64_t out = 0;
      if (__builtin_mul_overflow(*v, *r, &out)) return overflow("*");
      *v = out;
    }
    return v;
  }

  absl::StatusOr<int64_t> atom() {
    skip();
    if (eat('(')) {
      absl::StatusOr<int64_t> v = expr();
      if (v.ok() && !eat(')')) return err(")");
      return v;
    }
    const size_t start = i_;
    if (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) {
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
      int64_t n = 0;
      if (!absl::SimpleAtoi(s_.substr(start, i_ - start), &n)) return overflow("a literal");
      return n;
    }
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) {
      ++i_;
    }
    const std::string id = s_.substr(start, i_ - start);
    if (id.empty()) return err("a number, symbol or call");
    if (id == "cdiv" || id == "min" || id == "max") return call(id);
    for (const auto& [name, value] : syms_) {
      if (name == id) return value;
    }
    return absl::InvalidArgumentError(
        absl::StrCat("launch expression \"", s_, "\": unbound symbol ", id));
  }

  absl::StatusOr<int64_t> call(const std::string& fn) {
    if (!eat('(')) return err("(");
    absl::StatusOr<int64_t> a = expr();
    if (!a.ok()) return a;
    if (!eat(',')) return err(",");
    absl::StatusOr<int64_t> b = expr();
    if (!b.ok()) return b;
    if (!eat(')')) return err(")");
    if (fn == "min") return std::min(*a, *b);
    if (fn == "max") return std::max(*a, *b);
    if (*b <= 0) return err("a positive divisor");
    // Ceiling division without forming a + b - 1 (which could overflow).
    return *a / *b + (*a % *b > 0 ? 1 : 0);
  }

  std::string s_;
  const LaunchSymbols& syms_;
  size_t i_ = 0;
};

}  // namespace

absl::StatusOr<int64_t> eval_launch_expr(std::string_view expr, const LaunchSymbols& symbols) {
  return ExprEval(expr, symbols).run();
}

absl::StatusOr<LaunchGeometry> eval_launch_rule(const LaunchRule& rule,
                                                const LaunchSymbols& symbols) {
  LaunchGeometry d;
  for (int i = 0; i < 3; ++i) {
    for (auto [expr, out, what] : {std::tuple{&rule.grid[i], &d.grid[i], "grid"},
                                   std::tuple{&rule.block[i], &d.block[i], "block"}}) {
      absl::StatusOr<int64_t> v = eval_launch_expr(*expr, symbols);
      if (!v.ok()) return v.status();
      if (*v < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, "[", i, "] = \"", *expr, "\" evaluates to ", *v, ", not >= 1"));
      }
      *out = *v;
    }
  }
  absl::StatusOr<int64_t> shared = eval_launch_expr(rule.dynamic_shared_bytes, symbols);
  if (!shared.ok()) return shared.status();
  if (*shared < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("dynamic shared bytes \"", rule.dynamic_shared_bytes, "\" is negative"));
  }
  d.dynamic_shared_bytes = *shared;
  return d;
}

}  // namespace kiln
