// Parser, printer and evaluator of fused_elementwise expressions (see ir/expr.h).
#include "ir/expr.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <functional>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

constexpr int kMaxDepth = kMaxExprDepth;  // bounds recursion on hostile input

constexpr Expr::Kind kCalls[] = {Expr::Kind::kAdd,   Expr::Kind::kSub, Expr::Kind::kMul,
                                 Expr::Kind::kDiv,   Expr::Kind::kNeg, Expr::Kind::kExp,
                                 Expr::Kind::kRsqrt, Expr::Kind::kSilu};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  absl::StatusOr<std::vector<Expr::Node>> run() {
    absl::Status s = parse_expr(0);
    if (!s.ok()) return s;
    skip_space();
    if (pos_ != text_.size()) return error("end of expression");
    return std::move(nodes_);
  }

 private:
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }

  std::string token_at(size_t p) const {
    if (p >= text_.size()) return "end of input";
    size_t e = p + 1;
    while (e < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[e])) ||
                                text_[e] == '.' || text_[e] == '_')) {
      ++e;
    }
    return absl::StrCat("'", std::string(text_.substr(p, e - p)), "'");
  }

  absl::Status error(std::string_view expected) const {
    return absl::InvalidArgumentError(absl::StrCat(
        "expr:", pos_ + 1, ": expected ", std::string(expected), ", got ", token_at(pos_)));
  }

  absl::Status parse_expr(int depth) {
    if (depth > kMaxDepth) return error("a shallower expression (nesting limit 200)");
    skip_space();
    if (pos_ >= text_.size()) return error("an expression");
    char c = text_[pos_];
    if (c == '$') {
      size_t start = ++pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      int index = 0;
      auto [ptr, ec] = std::from_chars(text_.data() + start, text_.data() + pos_, index);
      if (start == pos_ || ec != std::errc() || index > 1000000) {
        pos_ = start;
        return error("an input index after '$'");
      }
      nodes_.push_back({Expr::Kind::kInput, index, 0, {-1, -1}});
      return absl::OkStatus();
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '+' || c == '.') {
      // strtod accepts more than we want (hex, inf); check the characters first.
      size_t end = pos_ + 1;
      while (end < text_.size() && (std::isdigit(static_cast<unsigned char>(text_[end])) ||
                                    text_[end] == '.' || text_[end] == 'e' || text_[end] == 'E' ||
                                    ((text_[end] == '-' || text_[end] == '+') &&
                                     (text_[end - 1] == 'e' || text_[end - 1] == 'E')))) {
        ++end;
      }
      std::string lit(text_.substr(pos_, end - pos_));
      char* parsed_end = nullptr;
      double v = std::strtod(lit.c_str(), &parsed_end);
      if (parsed_end != lit.c_str() + lit.size() || !std::isfinite(v)) return error("a number");
      pos_ = end;
      nodes_.push_back({Expr::Kind::kLiteral, 0, v, {-1, -1}});
      return absl::OkStatus();
    }
    if (!std::isalpha(static_cast<unsigned char>(c))) return error("'$N', a number or a call");
    size_t start = pos_;
    while (pos_ < text_.size() && std::isalnum(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    std::string_view name = text_.substr(start, pos_ - start);
    const Expr::Kind* kind = nullptr;
    for (const Expr::Kind& k : kCalls) {
      if (name == Expr::call_name(k)) kind = &k;
    }
    if (kind == nullptr) {
      pos_ = start;
      return error("a function (add sub mul div neg exp rsqrt silu)");
    }
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] != '(') return error("'('");
    ++pos_;
    Expr::Node node{*kind, 0, 0, {-1, -1}};
    const int n = Expr::arity(*kind);
    for (int i = 0; i < n; ++i) {
      if (i > 0) {
        skip_space();
        if (pos_ >= text_.size() || text_[pos_] != ',') {
          return error(absl::StrCat("',' (", std::string(name), " takes ", n, " arguments)"));
        }
        ++pos_;
      }
      if (absl::Status s = parse_expr(depth + 1); !s.ok()) return s;
      node.args[i] = static_cast<int>(nodes_.size()) - 1;
    }
    skip_space();
    if (pos_ >= text_.size() || text_[pos_] != ')') {
      return error(absl::StrCat("')' (", std::string(name), " takes ", n,
                                n == 1 ? " argument)" : " arguments)"));
    }
    ++pos_;
    nodes_.push_back(node);
    return absl::OkStatus();
  }

  std::string_view text_;
  size_t pos_ = 0;
  std::vector<Expr::Node> nodes_;
};

std::string literal_to_string(double v) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, end);
}

}  // namespace

const char* Expr::call_name(Kind kind) {
  switch (kind) {
    case Kind::kInput:
    case Kind::kLiteral: return "";
    case Kind::kAdd: return "add";
    case Kind::kSub: return "sub";
    case Kind::kMul: return "mul";
    case Kind::kDiv: return "div";
    case Kind::kNeg: return "neg";
    case Kind::kExp: return "exp";
    case Kind::kRsqrt: return "rsqrt";
    case Kind::kSilu: return "silu";
  }
  return "";
}

int Expr::arity(Kind kind) {
  switch (kind) {
    case Kind::kInput:
    case Kind::kLiteral: return 0;
    case Kind::kAdd:
    case Kind::kSub:
    case Kind::kMul:
    case Kind::kDiv: return 2;
    case Kind::kNeg:
    case Kind::kExp:
    case Kind::kRsqrt:
    case Kind::kSilu: return 1;
  }
  return 0;
}

absl::StatusOr<Expr> Expr::parse(std::string_view text) {
  absl::StatusOr<std::vector<Node>> nodes = Parser(text).run();
  if (!nodes.ok()) return nodes.status();
  Expr e;
  e.nodes_ = std::move(*nodes);
  for (const Node& n : e.nodes_) {
    if (n.kind == Kind::kInput) e.max_input_ = std::max(e.max_input_, n.input);
  }
  return e;
}

std::string Expr::to_string() const {
  std::function<std::string(int)> print = [&](int i) -> std::string {
    const Node& n = nodes_[i];
    switch (n.kind) {
      case Kind::kInput: return absl::StrCat("$", n.input);
      case Kind::kLiteral: return literal_to_string(n.literal);
      default: break;
    }
    std::string out = absl::StrCat(call_name(n.kind), "(", print(n.args[0]));
    if (arity(n.kind) == 2) absl::StrAppend(&out, ", ", print(n.args[1]));
    return out + ")";
  };
  return nodes_.empty() ? "" : print(static_cast<int>(nodes_.size()) - 1);
}

float Expr::eval(const float* inputs, float* scratch) const {
  for (size_t i = 0; i < nodes_.size(); ++i) {
    const Node& n = nodes_[i];
    const float a = n.args[0] >= 0 ? scratch[n.args[0]] : 0.0f;
    const float b = n.args[1] >= 0 ? scratch[n.args[1]] : 0.0f;
    float r = 0;
    switch (n.kind) {
      case Kind::kInput: r = inputs[n.input]; break;
      case Kind::kLiteral: r = static_cast<float>(n.literal); break;
      case Kind::kAdd: r = a + b; break;
      case Kind::kSub: r = a - b; break;
      case Kind::kMul: r = a * b; break;
      case Kind::kDiv: r = a / b; break;
      case Kind::kNeg: r = -a; break;
      case Kind::kExp: r = std::exp(a); break;
      case Kind::kRsqrt: r = 1.0f / std::sqrt(a); break;
      case Kind::kSilu: r = a / (1.0f + std::exp(-a)); break;
    }
    scratch[i] = r;
  }
  return scratch[nodes_.size() - 1];
}

absl::Status validate_expr(std::string_view text, int num_inputs) {
  absl::StatusOr<Expr> e = Expr::parse(text);
  if (!e.ok()) return e.status();
  if (e->max_input_index() >= num_inputs) {
    return absl::InvalidArgumentError(absl::StrCat("expr uses $", e->max_input_index(),
                                                   " but the op has ", num_inputs, " inputs"));
  }
  return absl::OkStatus();
}

}  // namespace kiln
