// Recursive-descent parser for fused_elementwise expressions (see elementwise_expr.h).
#include "codegen/elementwise_expr.h"

#include <cctype>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kiln {
namespace {

struct Call {
  const char* name;
  ElementwiseExpr::Kind kind;
  int arity;
};
constexpr Call kCalls[] = {
    {"add", ElementwiseExpr::Kind::kAdd, 2},     {"sub", ElementwiseExpr::Kind::kSub, 2},
    {"mul", ElementwiseExpr::Kind::kMul, 2},     {"div", ElementwiseExpr::Kind::kDiv, 2},
    {"neg", ElementwiseExpr::Kind::kNeg, 1},     {"exp", ElementwiseExpr::Kind::kExp, 1},
    {"rsqrt", ElementwiseExpr::Kind::kRsqrt, 1}, {"silu", ElementwiseExpr::Kind::kSilu, 1},
};

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  absl::StatusOr<int> parse_expr(std::vector<ElementwiseExpr::Node>& nodes, int& max_input,
                                 int depth) {
    if (depth > 256) return error("a shallower expression", "nesting deeper than 256");
    skip_space();
    if (pos_ >= text_.size()) return error("an operand", "end of text");
    const char c = text_[pos_];
    if (c == '$') {
      ++pos_;
      size_t start = pos_;
      while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
      if (start == pos_ || pos_ - start > 6) return error("an input index after $", token());
      ElementwiseExpr::Node n;
      n.kind = ElementwiseExpr::Kind::kInput;
      n.input = std::atoi(std::string(text_.substr(start, pos_ - start)).c_str());
      max_input = std::max(max_input, n.input);
      nodes.push_back(n);
      return static_cast<int>(nodes.size()) - 1;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-' || c == '.') {
      std::string s(text_.substr(pos_));
      char* end = nullptr;
      double v = std::strtod(s.c_str(), &end);
      if (end == s.c_str()) return error("a number", token());
      pos_ += static_cast<size_t>(end - s.c_str());
      ElementwiseExpr::Node n;
      n.kind = ElementwiseExpr::Kind::kLiteral;
      n.literal = v;
      nodes.push_back(n);
      return static_cast<int>(nodes.size()) - 1;
    }
    size_t start = pos_;
    while (pos_ < text_.size() && std::isalpha(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    std::string_view name = text_.substr(start, pos_ - start);
    const Call* call = nullptr;
    for (const Call& k : kCalls) {
      if (name == k.name) call = &k;
    }
    if (call == nullptr) {
      pos_ = start;
      return error("$N, a number or one of add sub mul div neg exp rsqrt silu", token());
    }
    if (!consume('(')) return error("(", token());
    ElementwiseExpr::Node n;
    n.kind = call->kind;
    for (int i = 0; i < call->arity; ++i) {
      if (i > 0 && !consume(',')) return error(",", token());
      absl::StatusOr<int> arg = parse_expr(nodes, max_input, depth + 1);
      if (!arg.ok()) return arg.status();
      n.args[i] = *arg;
    }
    if (!consume(')')) return error(")", token());
    nodes.push_back(n);
    return static_cast<int>(nodes.size()) - 1;
  }

  bool at_end() {
    skip_space();
    return pos_ >= text_.size();
  }
  absl::Status error(std::string_view what, std::string_view got) const {
    return absl::InvalidArgumentError(absl::StrCat("expr:", pos_ + 1, ": expected ",
                                                   std::string(what), ", got ", std::string(got)));
  }
  std::string token() const {
    if (pos_ >= text_.size()) return "end of text";
    return "'" + std::string(text_.substr(pos_, 1)) + "'";
  }

 private:
  void skip_space() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  bool consume(char c) {
    skip_space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<ElementwiseExpr> ElementwiseExpr::parse(std::string_view text) {
  ElementwiseExpr e;
  Parser p(text);
  absl::StatusOr<int> root = p.parse_expr(e.nodes_, e.max_input_, 0);
  if (!root.ok()) return root.status();
  if (!p.at_end()) return p.error("end of expression", p.token());
  return e;
}

}  // namespace kiln
