// fp8_kv_accuracy: what `--kv-dtype fp8e4m3` costs in accuracy, measured on the CPU reference
// backend (fp8e4m3 emulated exactly: the GPU's codes and scales) with the prefix cache on. A
// model (a .gguf or an HF folder) is compiled in memory twice, with its own KV dtype and with
// fp8e4m3, and both score the same teacher-forced text: a shared prefix computed once, cached
// (its partly filled last page included), then several prompts that reuse it from the prefix
// cache (full pages shared, the partial page copied on write with its scales) and go on token by
// token. Every position's next-token distribution of the fp8e4m3 run is compared with the
// baseline's: KL divergence (nats) and argmax agreement (and, where the argmax moved, how far
// apart the baseline put the two tokens); each run's perplexity of the text too.
// Prints one JSON object (bench/cpu_fp8_kv_accuracy.sh writes the results file from it).
//
// The baseline is the reference backend's KV as it keeps a bf16 plan's cache: f32 values (it does
// not round K/V to bf16). bf16 rounding moves a value by at most 2^-9 relatively, e4m3 rounding
// by 2^-4: the figures are fp8e4m3's error, not a difference of two roundings.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "codegen/compile_model.h"
#include "models/tokenizer_source.h"
#include "runtime/kv/page_tables.h"
#include "runtime/kv/prefix_cache.h"
#include "runtime/kv/step_metadata.h"
#include "runtime/reference/reference_backend.h"

namespace kiln {
namespace {

struct Options {
  std::string model;
  std::string text;         // paragraphs separated by blank lines: the prefix, then the prompts
  int prefix_tokens = 200;  // not a multiple of the page size: a partial page is shared
  int prompt_tokens = 220;  // per prompt, after the prefix
  int threads = 2;
};

int usage() {
  std::fprintf(stderr,
               "usage: fp8_kv_accuracy --model M --text FILE [--prefix-tokens N] "
               "[--prompt-tokens N] [--threads N]\n");
  return 2;
}

[[noreturn]] void die(const absl::Status& s) {
  std::fprintf(stderr, "fp8_kv_accuracy: %s\n", std::string(s.message()).c_str());
  std::exit(1);
}

template <class T>
T check(absl::StatusOr<T> v) {
  if (!v.ok()) die(v.status());
  return *std::move(v);
}

/// The scored positions of one run: every logits row, in a fixed order (the prefix's positions,
/// then each prompt's), and the token that follows each position in the text (-1: none).
struct Scored {
  std::vector<std::vector<float>> rows;
  std::vector<int32_t> next;
  double seconds = 0;
  int64_t prefix_hits = 0;  // tokens the prompts took from the prefix cache
  std::string report;
};

Scored score(const Plan& plan, const std::vector<int32_t>& prefix,
             const std::vector<std::vector<int32_t>>& prompts, int threads) {
  BackendOptions bo;
  bo.num_threads = threads;
  const int64_t ps = plan.kv.page_size;
  int64_t pages = (static_cast<int64_t>(prefix.size()) + ps - 1) / ps + 1;
  for (const auto& p : prompts) pages += (static_cast<int64_t>(p.size()) + ps) / ps + 1;
  bo.kv_pages = pages;
  std::unique_ptr<ReferenceBackend> backend = check(ReferenceBackend::create(plan, bo));
  KvPageTables tables = check(
      KvPageTables::create({static_cast<int32_t>(ps), static_cast<int32_t>(backend->kv_pages())}));
  PrefixCache cache(tables);
  Scored out;
  out.report = backend->load_report();
  const int64_t vocab = plan.model.vocab_size;
  // One step of the given sequences (one token each); appends each sequence's logits row.
  auto step = [&](const std::vector<SeqId>& seqs, const std::vector<int32_t>& tokens) {
    std::vector<StepSequence> batch;
    for (SeqId s : seqs) batch.push_back({s, 1});
    StepMetadata meta = check(build_step_metadata(tables, batch));
    if (absl::Status s = backend->copy_kv_pages(tables.take_pending_copies()); !s.ok()) die(s);
    StepRequest req{StepInputs{tokens, std::move(meta)}, std::vector<SequenceSampling>(seqs.size()),
                    true};
    StepResult r = check(backend->run_step(req));
    for (size_t i = 0; i < seqs.size(); ++i) {
      out.rows.emplace_back(r.logits.begin() + i * vocab, r.logits.begin() + (i + 1) * vocab);
    }
  };
  const auto t0 = std::chrono::steady_clock::now();
  // The shared prefix, token by token (every position's logits), then cached with its partial
  // page.
  const SeqId first = tables.add_sequence();
  for (size_t t = 0; t < prefix.size(); ++t) {
    step({first}, {prefix[t]});
    out.next.push_back(t + 1 < prefix.size() ? prefix[t + 1] : -1);  // the last: prompt-dependent
  }
  if (absl::Status s = cache.insert(prefix, first, static_cast<int64_t>(prefix.size()), true);
      !s.ok()) {
    die(s);
  }
  if (absl::Status s = tables.free(first); !s.ok()) die(s);
  // The prompts reuse it and go on together, one token each per step.
  std::vector<SeqId> seqs;
  for (const auto& p : prompts) {
    std::vector<int32_t> full = prefix;
    full.insert(full.end(), p.begin(), p.end());
    PrefixMatch hit = check(cache.acquire(full, static_cast<int64_t>(prefix.size())));
    if (hit.cached_tokens != static_cast<int64_t>(prefix.size())) {
      die(absl::InternalError(absl::StrCat("the prefix cache served ", hit.cached_tokens,
                                           " tokens of the ", prefix.size(), "-token prefix")));
    }
    out.prefix_hits += hit.cached_tokens;
    seqs.push_back(hit.seq);
  }
  const size_t n = prompts[0].size();
  for (size_t j = 0; j < n; ++j) {
    std::vector<int32_t> tokens;
    for (const auto& p : prompts) tokens.push_back(p[j]);
    step(seqs, tokens);
    for (const auto& p : prompts) out.next.push_back(j + 1 < n ? p[j + 1] : -1);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

// log-softmax of a logits row, in double.
std::vector<double> log_softmax(const std::vector<float>& row) {
  const double mx = *std::max_element(row.begin(), row.end());
  double sum = 0;
  for (float x : row) sum += std::exp(x - mx);
  const double lse = mx + std::log(sum);
  std::vector<double> out(row.size());
  for (size_t i = 0; i < row.size(); ++i) out[i] = row[i] - lse;
  return out;
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  return v[i];
}

int run(const Options& o) {
  std::ifstream in(o.text);
  if (!in) die(absl::NotFoundError(absl::StrCat("cannot read ", o.text)));
  std::stringstream ss;
  ss << in.rdbuf();
  std::vector<std::string> paragraphs;
  for (absl::string_view p : absl::StrSplit(ss.str(), "\n\n", absl::SkipWhitespace())) {
    paragraphs.emplace_back(p);
  }
  if (paragraphs.size() < 2) die(absl::InvalidArgumentError("the text needs a prefix and prompts"));

  CompileOptions co;
  co.model = o.model;
  co.build_kernels = false;
  co.limits.max_seqs = static_cast<int64_t>(paragraphs.size());
  co.limits.max_tokens = 256;
  co.limits.max_context = o.prefix_tokens + o.prompt_tokens + 16;
  co.limits.dtype = DType::kBF16;
  CompiledPlan base = check(build_plan(co));
  co.limits.kv_dtype = DType::kFP8E4M3;
  CompiledPlan fp8 = check(build_plan(co));
  Tokenizer tok = check(load_tokenizer(base.plan.tokenizer_path));

  auto tokens_of = [&](const std::string& text, size_t n, bool bos) {
    std::vector<int32_t> t = tok.encode(text, /*parse_special=*/false, bos);
    if (t.size() < n) {
      die(absl::InvalidArgumentError(absl::StrCat("a paragraph has ", t.size(), " tokens, ", n,
                                                  " are needed: ", text.substr(0, 60))));
    }
    t.resize(n);
    return t;
  };
  const std::vector<int32_t> prefix = tokens_of(paragraphs[0], o.prefix_tokens, tok.add_bos());
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 1; i < paragraphs.size(); ++i) {
    prompts.push_back(tokens_of(" " + paragraphs[i], o.prompt_tokens, false));
  }

  const Scored a = score(base.plan, prefix, prompts, o.threads);
  const Scored b = score(fp8.plan, prefix, prompts, o.threads);
  std::vector<double> kl, gaps;
  int64_t agree = 0, scored_next = 0;
  double nll_a = 0, nll_b = 0;
  int64_t top1_a = 0, top1_b = 0;
  for (size_t r = 0; r < a.rows.size(); ++r) {
    const std::vector<double> la = log_softmax(a.rows[r]), lb = log_softmax(b.rows[r]);
    double k = 0;
    for (size_t i = 0; i < la.size(); ++i) k += std::exp(la[i]) * (la[i] - lb[i]);
    kl.push_back(std::max(k, 0.0));
    const int64_t am = std::max_element(la.begin(), la.end()) - la.begin();
    const int64_t bm = std::max_element(lb.begin(), lb.end()) - lb.begin();
    agree += am == bm;
    // Where the argmax moved: how far apart the baseline put its pick and fp8's (probability).
    if (am != bm) gaps.push_back(std::exp(la[am]) - std::exp(la[bm]));
    if (a.next[r] >= 0) {
      ++scored_next;
      nll_a -= la[a.next[r]];
      nll_b -= lb[a.next[r]];
      top1_a += am == a.next[r];
      top1_b += bm == a.next[r];
    }
  }
  double kl_mean = 0;
  for (double k : kl) kl_mean += k;
  kl_mean /= static_cast<double>(kl.size());
  std::printf(
      "{\"model\": \"%s\", \"positions\": %zu, \"prefix_tokens\": %d, \"prompts\": %zu, "
      "\"prompt_tokens\": %d, \"prefix_cache_hit_tokens\": %lld, \"baseline_kv\": \"%s (held as "
      "f32 by the reference backend)\", \"kv\": \"fp8e4m3\", \"kl_mean\": %.6g, \"kl_median\": "
      "%.6g, \"kl_p99\": %.6g, \"kl_max\": %.6g, \"argmax_agreement\": %.6f, \"ppl_baseline\": "
      "%.6g, \"ppl_fp8\": %.6g, \"top1_baseline\": %.6f, \"top1_fp8\": %.6f, \"seconds_baseline\": "
      "%.1f, \"seconds_fp8\": %.1f, \"kv_bytes_per_token_baseline\": %lld, "
      "\"kv_bytes_per_token_fp8\": %lld, \"flips\": %zu, \"flip_gap_median\": %.4g, "
      "\"flip_gap_max\": %.4g}\n",
      o.model.c_str(), kl.size(), o.prefix_tokens, prompts.size(), o.prompt_tokens,
      static_cast<long long>(b.prefix_hits), dtype_name(base.plan.kv.dtype).c_str(), kl_mean,
      percentile(kl, 0.5), percentile(kl, 0.99), percentile(kl, 1.0),
      static_cast<double>(agree) / static_cast<double>(kl.size()),
      std::exp(nll_a / static_cast<double>(scored_next)),
      std::exp(nll_b / static_cast<double>(scored_next)),
      static_cast<double>(top1_a) / static_cast<double>(scored_next),
      static_cast<double>(top1_b) / static_cast<double>(scored_next), a.seconds, b.seconds,
      static_cast<long long>(base.plan.kv.bytes_per_token()),
      static_cast<long long>(fp8.plan.kv.bytes_per_token()), gaps.size(),
      gaps.empty() ? 0.0 : percentile(gaps, 0.5), gaps.empty() ? 0.0 : percentile(gaps, 1.0));
  std::fprintf(stderr, "baseline: %s\nfp8e4m3:  %s\n", a.report.c_str(), b.report.c_str());
  return 0;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  kiln::Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--model") {
      o.model = value();
    } else if (a == "--text") {
      o.text = value();
    } else if (a == "--prefix-tokens") {
      o.prefix_tokens = std::atoi(value().c_str());
    } else if (a == "--prompt-tokens") {
      o.prompt_tokens = std::atoi(value().c_str());
    } else if (a == "--threads") {
      o.threads = std::atoi(value().c_str());
    } else {
      return kiln::usage();
    }
  }
  if (o.model.empty() || o.text.empty() || o.prefix_tokens < 1 || o.prompt_tokens < 2) {
    return kiln::usage();
  }
  return kiln::run(o);
}
