// plan-kv: page size, layout, dtype and byte counts read off a Llama graph's cache inputs.
#include <gtest/gtest.h>

#include "models/llama_graph.h"
#include "models/model_source.h"
#include "passes/pass_manager.h"
#include "tests/fixtures.h"

namespace kiln {
namespace {

TEST(PlanKv, ReadsThePageLayoutOffTheCacheInputs) {
  auto config = load_model_config(testing::fixture("tiny-gqa"));
  ASSERT_TRUE(config.ok()) << config.status();
  Graph g;
  StepLimits limits;
  limits.page_size = 32;
  limits.dtype = DType::kBF16;
  ASSERT_TRUE(build_llama(*config, limits, g).ok());
  PassContext context;
  ASSERT_TRUE(run_default_pipeline(g, context).ok());
  ASSERT_TRUE(context.kv_layout.has_value());
  const KvLayout& kv = *context.kv_layout;
  EXPECT_EQ(kv.page_size, 32);
  EXPECT_EQ(kv.layout, KvPageLayout::kNHD);
  EXPECT_EQ(kv.dtype, DType::kBF16);
  EXPECT_EQ(kv.num_layers, config->num_layers);
  EXPECT_EQ(kv.num_kv_heads, config->num_kv_heads);
  EXPECT_EQ(kv.head_dim, config->head_dim);
  // K and V pages of [32, kv_heads, head_dim] bf16 values, per layer and over all layers.
  const int64_t per_layer = 2 * 32 * config->num_kv_heads * config->head_dim * 2;
  EXPECT_EQ(kv.bytes_per_page_per_layer(), per_layer);
  EXPECT_EQ(kv.bytes_per_page(), config->num_layers * per_layer);
  EXPECT_EQ(kv.bytes_per_token(),
            2 * config->num_layers * config->num_kv_heads * config->head_dim * 2);
  EXPECT_EQ(kv.pages_for_budget(10 * kv.bytes_per_page() + 1), 10);
  EXPECT_EQ(kv.pages_for_budget(kv.bytes_per_page() - 1), 0);
}

}  // namespace
}  // namespace kiln
