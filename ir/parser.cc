// Hand-written lexer and recursive-descent parser for IR text.
#include "ir/parser.h"

#include <charconv>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kiln {
namespace {

enum class Tok { kEnd, kIdent, kLocal, kGlobal, kInt, kFloat, kString, kPunct, kError };

struct Token {
  Tok kind = Tok::kEnd;
  std::string text;  // identifier/name without sigil, number text, string contents, punctuation
  int line = 1;
  int col = 1;
};

std::string describe(const Token& t) {
  switch (t.kind) {
    case Tok::kEnd: return "end of input";
    case Tok::kIdent: return absl::StrCat("'", t.text, "'");
    case Tok::kLocal: return absl::StrCat("'%", t.text, "'");
    case Tok::kGlobal: return absl::StrCat("'@", t.text, "'");
    case Tok::kInt:
    case Tok::kFloat: return absl::StrCat("number ", t.text);
    case Tok::kString: return "a string";
    case Tok::kPunct: return absl::StrCat("'", t.text, "'");
    case Tok::kError: return t.text;
  }
  return "?";
}

bool is_name_char(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
}

class Lexer {
 public:
  explicit Lexer(std::string_view text) : text_(text) {}

  Token next() {
    skip_space_and_comments();
    Token t;
    t.line = line_;
    t.col = col_;
    if (pos_ >= text_.size()) return t;
    char c = text_[pos_];
    if (c == '%' || c == '@') {
      advance();
      size_t start = pos_;
      while (pos_ < text_.size() && is_name_char(text_[pos_])) advance();
      if (pos_ == start) {
        return error(t, absl::StrCat("expected a name after '", std::string(1, c), "'"));
      }
      t.kind = c == '%' ? Tok::kLocal : Tok::kGlobal;
      t.text = std::string(text_.substr(start, pos_ - start));
      return t;
    }
    if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t start = pos_;
      while (pos_ < text_.size() &&
             (absl::ascii_isalnum(static_cast<unsigned char>(text_[pos_])) || text_[pos_] == '_')) {
        advance();
      }
      t.kind = Tok::kIdent;
      t.text = std::string(text_.substr(start, pos_ - start));
      // Non-finite floats print as inf / nan (possibly negative, handled by the number path).
      if (t.text == "inf" || t.text == "nan") t.kind = Tok::kFloat;
      return t;
    }
    if (absl::ascii_isdigit(static_cast<unsigned char>(c)) ||
        (c == '-' && pos_ + 1 < text_.size() &&
         (absl::ascii_isdigit(static_cast<unsigned char>(text_[pos_ + 1])) ||
          text_[pos_ + 1] == 'i' || text_[pos_ + 1] == 'n'))) {
      return number(t);
    }
    if (c == '"') return string(t);
    if (c == '<' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '=') {
      advance();
      advance();
      t.kind = Tok::kPunct;
      t.text = "<=";
      return t;
    }
    if (absl::string_view("{}()[],=:+").find(c) != absl::string_view::npos) {
      advance();
      t.kind = Tok::kPunct;
      t.text = std::string(1, c);
      return t;
    }
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      // A control or non-ASCII byte where a token should start: most likely a binary file
      // (a .kplan or .gguf passed where a .kir was expected), not a typo.
      return error(t,
                   absl::StrFormat("not IR text (binary byte 0x%02x at %d:%d)", u, t.line, t.col));
    }
    return error(t, absl::StrCat("unexpected character '", std::string(1, c), "'"));
  }

 private:
  Token error(Token t, std::string msg) {
    t.kind = Tok::kError;
    t.text = std::move(msg);
    pos_ = text_.size();
    return t;
  }

  void advance() {
    if (text_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    ++pos_;
  }

  void skip_space_and_comments() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        advance();
      } else if (c == '/' && pos_ + 1 < text_.size() && text_[pos_ + 1] == '/') {
        while (pos_ < text_.size() && text_[pos_] != '\n') advance();
      } else {
        break;
      }
    }
  }

  Token number(Token t) {
    size_t start = pos_;
    if (text_[pos_] == '-') advance();
    bool is_float = false;
    if (pos_ < text_.size() && (text_[pos_] == 'i' || text_[pos_] == 'n')) {  // -inf, -nan
      size_t word = pos_;
      while (pos_ < text_.size() && absl::ascii_isalpha(static_cast<unsigned char>(text_[pos_])))
        advance();
      std::string w(text_.substr(word, pos_ - word));
      if (w != "inf" && w != "nan") {
        return error(t, absl::StrCat("expected a number, got '", w, "'"));
      }
      is_float = true;
    } else {
      while (pos_ < text_.size()) {
        char c = text_[pos_];
        if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
          advance();
        } else if (c == '.' || c == 'e' || c == 'E') {
          is_float = true;
          advance();
          if ((c == 'e' || c == 'E') && pos_ < text_.size() &&
              (text_[pos_] == '-' || text_[pos_] == '+')) {
            advance();
          }
        } else {
          break;
        }
      }
    }
    t.kind = is_float ? Tok::kFloat : Tok::kInt;
    t.text = std::string(text_.substr(start, pos_ - start));
    return t;
  }

  Token string(Token t) {
    advance();  // opening quote
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      char c = text_[pos_];
      if (c == '\n') return error(t, "expected a closing '\"' before the end of the line");
      if (c == '\\') {
        advance();
        if (pos_ >= text_.size()) break;
        char e = text_[pos_];
        out += e == 'n' ? '\n' : e;
      } else {
        out += c;
      }
      advance();
    }
    if (pos_ >= text_.size()) return error(t, "expected a closing '\"'");
    advance();
    t.kind = Tok::kString;
    t.text = std::move(out);
    return t;
  }

  std::string_view text_;
  size_t pos_ = 0;
  int line_ = 1;
  int col_ = 1;
};

class Parser {
 public:
  explicit Parser(std::string_view text) : lexer_(text) { tok_ = lexer_.next(); }

  absl::StatusOr<std::unique_ptr<Graph>> parse() {
    if (absl::Status s = expect_ident("graph"); !s.ok()) return s;
    if (tok_.kind != Tok::kGlobal) return expected("a graph name like @main");
    auto graph = std::make_unique<Graph>(tok_.text);
    graph_ = graph.get();
    bump();
    if (absl::Status s = expect_punct("{"); !s.ok()) return s;
    while (!is_punct("}")) {
      absl::Status s = statement();
      if (!s.ok()) return s;
    }
    bump();
    if (tok_.kind != Tok::kEnd) return expected("end of input after '}'");
    return graph;
  }

 private:
  void bump() { tok_ = lexer_.next(); }
  bool is_punct(absl::string_view p) const { return tok_.kind == Tok::kPunct && tok_.text == p; }
  bool is_ident(absl::string_view w) const { return tok_.kind == Tok::kIdent && tok_.text == w; }

  absl::Status error_at(const Token& t, absl::string_view msg) const {
    return absl::InvalidArgumentError(absl::StrCat(t.line, ":", t.col, ": ", msg));
  }
  absl::Status expected(absl::string_view what) const {
    if (tok_.kind == Tok::kError) return error_at(tok_, tok_.text);  // the lexer's whole message
    return error_at(tok_, absl::StrCat("expected ", what, ", got ", describe(tok_)));
  }
  absl::Status expect_punct(absl::string_view p) {
    if (!is_punct(p)) return expected(absl::StrCat("'", p, "'"));
    bump();
    return absl::OkStatus();
  }
  absl::Status expect_ident(absl::string_view w) {
    if (!is_ident(w)) return expected(absl::StrCat("'", w, "'"));
    bump();
    return absl::OkStatus();
  }

  absl::StatusOr<int64_t> parse_int() {
    if (tok_.kind != Tok::kInt) return expected("an integer");
    int64_t v = 0;
    absl::string_view s = tok_.text;
    if (!s.empty() && s[0] == '+') s.remove_prefix(1);
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
      return error_at(tok_, "integer out of range");
    bump();
    return v;
  }

  absl::StatusOr<double> parse_float_token() {
    absl::string_view s = tok_.text;
    bool neg = false;
    if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
      neg = s[0] == '-';
      s.remove_prefix(1);
    }
    double v = 0;
    if (s == "inf") {
      v = std::numeric_limits<double>::infinity();
    } else if (s == "nan") {
      v = std::numeric_limits<double>::quiet_NaN();
    } else {
      auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || end != s.data() + s.size())
        return error_at(tok_, "malformed number");
    }
    bump();
    return neg ? -v : v;
  }

  absl::Status statement() {
    if (tok_.kind == Tok::kIdent) {
      if (tok_.text == "symbol") return symbol_decl();
      if (tok_.text == "ranks") return ranks_decl();
      if (tok_.text == "input" || tok_.text == "param") return value_decl();
      if (tok_.text == "output") return output_decl();
      return expected("'symbol', 'input', 'param', 'output' or a result like %0");
    }
    if (tok_.kind == Tok::kLocal) return node();
    return expected("'symbol', 'input', 'param', 'output' or a result like %0");
  }

  absl::Status symbol_decl() {
    bump();
    if (tok_.kind != Tok::kIdent) return expected("a symbol name");
    Token name = tok_;
    bump();
    if (absl::Status s = expect_punct("<="); !s.ok()) return s;
    absl::StatusOr<int64_t> bound = parse_int();
    if (!bound.ok()) return bound.status();
    if (absl::Status s = graph_->symbols().add({name.text, *bound}); !s.ok()) {
      return error_at(name, s.message());
    }
    return absl::OkStatus();
  }

  absl::Status value_decl() {
    bool is_param = tok_.text == "param";
    bump();
    if (tok_.kind != (is_param ? Tok::kGlobal : Tok::kLocal)) {
      return expected(is_param ? "a parameter name like @embed" : "an input name like %tokens");
    }
    Token name = tok_;
    bump();
    if (absl::Status s = expect_punct(":"); !s.ok()) return s;
    absl::StatusOr<Type> type = parse_type();
    if (!type.ok()) return type.status();
    if (is_param) {
      if (params_.count(name.text))
        return error_at(name, absl::StrCat("@", name.text, " is declared twice"));
      std::vector<ParamPart> parts;
      std::vector<std::vector<ParamPart>> rank_parts;
      if (is_punct("=")) {
        bump();
        if (is_ident("shards")) {
          absl::StatusOr<std::vector<std::vector<ParamPart>>> p = param_shards();
          if (!p.ok()) return p.status();
          rank_parts = *std::move(p);
        } else {
          absl::StatusOr<std::vector<ParamPart>> p = param_parts();
          if (!p.ok()) return p.status();
          parts = *std::move(p);
        }
      }
      Value* param = graph_->add_param(name.text, *type, std::move(parts));
      param->rank_parts = std::move(rank_parts);
      params_[name.text] = param;
    } else {
      if (locals_.count(name.text))
        return error_at(name, absl::StrCat("%", name.text, " is defined twice"));
      locals_[name.text] = graph_->add_input(name.text, *type);
    }
    return absl::OkStatus();
  }

  // `rows("tensor"[begin:end], ...)` or `cols(...)` after a param's `=`.
  absl::StatusOr<std::vector<ParamPart>> param_parts() {
    SliceAxis axis = SliceAxis::kRows;
    if (is_ident("cols")) {
      axis = SliceAxis::kCols;
    } else if (!is_ident("rows")) {
      return expected("rows(...), cols(...) or shards(...)");
    }
    bump();
    if (absl::Status s = expect_punct("("); !s.ok()) return s;
    std::vector<ParamPart> parts;
    while (true) {
      if (tok_.kind != Tok::kString) return expected("a checkpoint tensor name like \"w.q\"");
      ParamPart& p = parts.emplace_back();
      p.source = tok_.text;
      p.axis = axis;
      bump();
      if (absl::Status s = expect_punct("["); !s.ok()) return s;
      absl::StatusOr<int64_t> begin = parse_int();
      if (!begin.ok()) return begin.status();
      if (absl::Status s = expect_punct(":"); !s.ok()) return s;
      absl::StatusOr<int64_t> end = parse_int();
      if (!end.ok()) return end.status();
      if (absl::Status s = expect_punct("]"); !s.ok()) return s;
      if (*begin < 0 || *end <= *begin) {
        return expected(
            absl::StrCat("a ", slice_axis_name(axis), " range [begin:end] with 0 <= begin < end"));
      }
      p.begin = *begin;
      p.end = *end;
      if (!is_punct(",")) break;
      bump();
    }
    if (absl::Status s = expect_punct(")"); !s.ok()) return s;
    return parts;
  }

  // `shards(<parts of rank 0>, <parts of rank 1>, ...)`: one rows(...) / cols(...) per rank.
  absl::StatusOr<std::vector<std::vector<ParamPart>>> param_shards() {
    bump();
    if (absl::Status s = expect_punct("("); !s.ok()) return s;
    std::vector<std::vector<ParamPart>> ranks;
    while (true) {
      if (static_cast<int>(ranks.size()) >= kMaxRanks) {
        return error_at(tok_, absl::StrCat("more than ", kMaxRanks, " shards"));
      }
      absl::StatusOr<std::vector<ParamPart>> parts = param_parts();
      if (!parts.ok()) return parts.status();
      ranks.push_back(*std::move(parts));
      if (!is_punct(",")) break;
      bump();
    }
    if (absl::Status s = expect_punct(")"); !s.ok()) return s;
    return ranks;
  }

  // `ranks N`: the tensor-parallel ranks that run the program.
  absl::Status ranks_decl() {
    bump();
    Token at = tok_;
    absl::StatusOr<int64_t> n = parse_int();
    if (!n.ok()) return n.status();
    if (*n < 1 || *n > kMaxRanks) {
      return error_at(at, absl::StrCat("ranks must be in [1, ", kMaxRanks, "], got ", *n));
    }
    if (ranks_declared_) return error_at(at, "ranks is declared twice");
    ranks_declared_ = true;
    graph_->set_ranks(static_cast<int>(*n));
    return absl::OkStatus();
  }

  absl::Status output_decl() {
    bump();
    if (tok_.kind != Tok::kIdent) return expected("an output name");
    std::string name = tok_.text;
    bump();
    if (absl::Status s = expect_punct("="); !s.ok()) return s;
    absl::StatusOr<Value*> v = use();
    if (!v.ok()) return v.status();
    graph_->add_output(name, *v);
    return absl::OkStatus();
  }

  absl::StatusOr<Value*> use() {
    if (tok_.kind == Tok::kLocal) {
      auto it = locals_.find(tok_.text);
      if (it == locals_.end())
        return error_at(tok_, absl::StrCat("use of undefined value %", tok_.text));
      bump();
      return it->second;
    }
    if (tok_.kind == Tok::kGlobal) {
      auto it = params_.find(tok_.text);
      if (it == params_.end())
        return error_at(tok_, absl::StrCat("use of undeclared parameter @", tok_.text));
      bump();
      return it->second;
    }
    return expected("a value (%name or @param)");
  }

  absl::Status node() {
    std::vector<Token> results;
    while (true) {
      if (tok_.kind != Tok::kLocal) return expected("a result name like %0");
      if (locals_.count(tok_.text))
        return error_at(tok_, absl::StrCat("%", tok_.text, " is defined twice"));
      for (const Token& r : results) {
        if (r.text == tok_.text)
          return error_at(tok_, absl::StrCat("%", tok_.text, " is defined twice"));
      }
      results.push_back(tok_);
      bump();
      if (!is_punct(",")) break;
      bump();
    }
    if (absl::Status s = expect_punct("="); !s.ok()) return s;
    if (tok_.kind != Tok::kIdent) return expected("an op name");
    Token op_tok = tok_;
    std::optional<OpKind> op = parse_op_name(tok_.text);
    if (!op) return error_at(tok_, absl::StrCat("unknown op '", tok_.text, "'"));
    bump();
    if (absl::Status s = expect_punct("("); !s.ok()) return s;
    std::vector<Value*> inputs;
    if (!is_punct(")")) {
      while (true) {
        absl::StatusOr<Value*> v = use();
        if (!v.ok()) return v.status();
        inputs.push_back(*v);
        if (!is_punct(",")) break;
        bump();
      }
    }
    if (absl::Status s = expect_punct(")"); !s.ok()) return s;
    Attributes attrs;
    if (is_punct("{")) {
      bump();
      while (!is_punct("}")) {
        if (tok_.kind != Tok::kIdent) return expected("an attribute name");
        Token name = tok_;
        if (attrs.has(name.text))
          return error_at(name, absl::StrCat("attribute '", name.text, "' is given twice"));
        bump();
        if (absl::Status s = expect_punct("="); !s.ok()) return s;
        absl::StatusOr<Attribute> value = parse_attribute();
        if (!value.ok()) return value.status();
        attrs.set(name.text, *value);
        if (is_punct(",")) {
          bump();
        } else if (!is_punct("}")) {
          return expected("',' or '}'");
        }
      }
      bump();
    }
    if (absl::Status s = expect_punct(":"); !s.ok()) return s;
    std::vector<Type> types;
    while (true) {
      absl::StatusOr<Type> t = parse_type();
      if (!t.ok()) return t.status();
      types.push_back(*t);
      if (!is_punct(",")) break;
      bump();
    }
    if (types.size() != results.size()) {
      return error_at(op_tok, absl::StrCat(op_name(*op), " declares ", results.size(),
                                           " results but ", types.size(), " types"));
    }
    // An op whose result count depends on its operands is checked by the verifier.
    const int want_outputs = op_traits(*op).num_outputs;
    if (want_outputs >= 0 && static_cast<int>(results.size()) != want_outputs) {
      return error_at(results[0], absl::StrCat(op_name(*op), " has ", want_outputs,
                                               " result(s), got ", results.size()));
    }
    Node* n = graph_->add_node(*op, std::move(inputs), std::move(attrs), types);
    for (size_t i = 0; i < results.size(); ++i) {
      n->outputs[i]->name = results[i].text;
      locals_[results[i].text] = n->outputs[i];
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Attribute> parse_attribute() {
    switch (tok_.kind) {
      case Tok::kInt: {
        absl::StatusOr<int64_t> v = parse_int();
        if (!v.ok()) return v.status();
        return Attribute(*v);
      }
      case Tok::kFloat: {
        absl::StatusOr<double> v = parse_float_token();
        if (!v.ok()) return v.status();
        return Attribute(*v);
      }
      case Tok::kString: {
        std::string s = tok_.text;
        bump();
        return Attribute(std::move(s));
      }
      case Tok::kIdent: {
        std::optional<DType> d = parse_dtype(tok_.text);
        if (!d) return expected("an attribute value (int, float, \"string\", [ints] or dtype)");
        bump();
        return Attribute(*d);
      }
      case Tok::kPunct:
        if (is_punct("[")) {
          bump();
          IntList list;
          while (!is_punct("]")) {
            absl::StatusOr<int64_t> v = parse_int();
            if (!v.ok()) return v.status();
            list.push_back(*v);
            if (is_punct(",")) {
              bump();
            } else if (!is_punct("]")) {
              return expected("',' or ']'");
            }
          }
          bump();
          return Attribute(std::move(list));
        }
        break;
      default: break;
    }
    return expected("an attribute value (int, float, \"string\", [ints] or dtype)");
  }

  absl::StatusOr<Type> parse_type() {
    if (tok_.kind != Tok::kIdent) return expected("a type like bf16[T,576]");
    std::optional<DType> dtype = parse_dtype(tok_.text);
    if (!dtype)
      return expected(
          "a dtype (f32, f16, bf16, fp8e4m3, i32, i64, u8, q8_0, q4_0, q4_1, q4_k, q6_k)");
    bump();
    Type type{*dtype, {}};
    if (absl::Status s = expect_punct("["); !s.ok()) return s;
    while (!is_punct("]")) {
      if (tok_.kind == Tok::kInt) {
        Token at = tok_;
        absl::StatusOr<int64_t> v = parse_int();
        if (!v.ok()) return v.status();
        if (*v < 0) return error_at(at, "dims must not be negative");
        type.shape.push_back(Dim::constant(*v));
      } else if (tok_.kind == Tok::kIdent) {
        Token sym = tok_;
        if (graph_->symbols().find(sym.text) == nullptr) {
          return error_at(sym, absl::StrCat("unknown symbol '", sym.text,
                                            "' (declare it with `symbol ", sym.text, " <= N`)"));
        }
        bump();
        int64_t offset = 0;
        if (is_punct("+")) {
          bump();
          absl::StatusOr<int64_t> v = parse_int();
          if (!v.ok()) return v.status();
          offset = *v;
        } else if (tok_.kind == Tok::kInt && !tok_.text.empty() && tok_.text[0] == '-') {
          absl::StatusOr<int64_t> v = parse_int();
          if (!v.ok()) return v.status();
          offset = *v;
        }
        type.shape.push_back(Dim::symbolic(sym.text, offset));
      } else {
        return expected("a dim (integer or symbol)");
      }
      if (is_punct(",")) {
        bump();
      } else if (!is_punct("]")) {
        return expected("',' or ']'");
      }
    }
    bump();
    return type;
  }

  // A bound on `ranks N` and on a param's shard count, far above any GPU count one program
  // spans, so that hostile text cannot make the parser build millions of part lists.
  static constexpr int kMaxRanks = 1024;

  Lexer lexer_;
  Token tok_;
  Graph* graph_ = nullptr;
  bool ranks_declared_ = false;
  std::unordered_map<std::string, Value*> locals_;
  std::unordered_map<std::string, Value*> params_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Graph>> parse_graph(std::string_view text) {
  // A control byte anywhere (a .kplan or .gguf passed as IR starts with printable magic, so the
  // lexer alone would report "expected 'graph', got 'KPLAN'"): say it is not text at all.
  int line = 1, col = 1;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t' && c != '\r') || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%d:%d: not IR text (binary byte 0x%02x at %d:%d)", line, col, u, line, col));
    }
    if (c == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return Parser(text).parse();
}

}  // namespace kiln
