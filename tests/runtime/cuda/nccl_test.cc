// The dlopen'd NCCL (runtime/cuda/nccl.h) on a machine that may have no GPU: a missing library is
// Unavailable with a message that says where NCCL comes from; the present one resolves every
// symbol kiln calls, reports its version and error strings, keeps NVLink multicast off, and
// without a GPU fails to make a communicator with a status (not a crash).
#include "runtime/cuda/nccl.h"

#include <cstdlib>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kiln {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;

TEST(Nccl, MissingLibraryIsUnavailableAndSaysWhereNcclComesFrom) {
  auto n = Nccl::load("libnccl-kiln-test-missing.so.2");
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(n.status().message(), HasSubstr("libnccl-kiln-test-missing.so.2"));
  EXPECT_THAT(n.status().message(), HasSubstr("nvidia-nccl-cu13"));
  EXPECT_THAT(n.status().message(), HasSubstr("--device cpu"));
}

TEST(Nccl, LoadsTheLibraryAndKeepsNvlinkMulticastOff) {
  setenv("NCCL_NVLS_ENABLE", "1", 1);
  auto n = Nccl::load();
  if (!n.ok()) GTEST_SKIP() << n.status().message();
  EXPECT_STREQ(std::getenv("NCCL_NVLS_ENABLE"), "0");
  EXPECT_THAT((*n)->version(), MatchesRegex("2\\.[0-9]+\\.[0-9]+"));
  EXPECT_FALSE((*n)->error_string(4).empty());  // ncclInvalidArgument
  EXPECT_THAT(nccl_data_type(DType::kQ4_0).status().message(), HasSubstr("q4_0"));
  EXPECT_TRUE(nccl_data_type(DType::kBF16).ok());
  EXPECT_EQ(nccl_data_type(DType::kBF16), nccl_data_type(DType::kBF16));
  EXPECT_NE(*nccl_data_type(DType::kBF16), *nccl_data_type(DType::kF32));
  // Arguments kiln checks itself.
  EXPECT_EQ((*n)->init_rank(NcclUniqueId{}, 2, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE((*n)->init_all({}).ok());
}

// Without a GPU (this test's usual machine) a communicator cannot exist; with one, a
// communicator of one rank is made and destroyed.
TEST(Nccl, OneRankCommunicatorOrAStatusWithoutAGpu) {
  auto n = Nccl::load();
  if (!n.ok()) GTEST_SKIP() << n.status().message();
  auto comms = (*n)->init_all({0});
  if (!comms.ok()) {
    EXPECT_THAT(comms.status().message(), HasSubstr("ncclCommInitAll failed"));
    return;
  }
  ASSERT_EQ(comms->size(), 1u);
  EXPECT_EQ((*comms)[0].ranks(), 1);
  EXPECT_NE((*comms)[0].handle(), nullptr);
}

}  // namespace
}  // namespace kiln
