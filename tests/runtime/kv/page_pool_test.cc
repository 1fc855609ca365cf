// PagePool: allocation order, reference counts, exhaustion and misuse errors.
#include "runtime/kv/page_pool.h"

#include <gtest/gtest.h>

namespace kiln {
namespace {

TEST(PagePool, AllocatesLowestFreePageFirst) {
  PagePool pool(4, 8);
  EXPECT_EQ(pool.page_size(), 8);
  EXPECT_EQ(pool.free_pages(), 4);
  for (int32_t expected = 0; expected < 4; ++expected) {
    auto page = pool.allocate();
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(*page, expected);
    EXPECT_EQ(pool.ref_count(*page), 1);
  }
  EXPECT_EQ(pool.free_pages(), 0);
  ASSERT_TRUE(pool.release(2).ok());
  ASSERT_TRUE(pool.release(1).ok());
  EXPECT_EQ(*pool.allocate(), 1);  // lowest first, not last released
  EXPECT_EQ(*pool.allocate(), 2);
}

TEST(PagePool, RefCountsKeepSharedPagesAllocated) {
  PagePool pool(2);
  EXPECT_EQ(pool.page_size(), PagePool::kDefaultPageSize);
  int32_t page = *pool.allocate();
  ASSERT_TRUE(pool.retain(page).ok());
  ASSERT_TRUE(pool.retain(page).ok());
  EXPECT_EQ(pool.ref_count(page), 3);
  ASSERT_TRUE(pool.release(page).ok());
  ASSERT_TRUE(pool.release(page).ok());
  EXPECT_EQ(pool.free_pages(), 1);
  ASSERT_TRUE(pool.release(page).ok());
  EXPECT_EQ(pool.ref_count(page), 0);
  EXPECT_EQ(pool.free_pages(), 2);
}

TEST(PagePool, ExhaustionSaysHowManyPagesAreInUse) {
  PagePool pool(3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.allocate().ok());
  auto page = pool.allocate();
  ASSERT_EQ(page.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(page.status().message().find("KV cache is out of pages: 3 in use of 3"),
            std::string::npos)
      << page.status();
}

TEST(PagePool, MisuseIsAnErrorNotACrash) {
  PagePool pool(2);
  EXPECT_EQ(pool.retain(0).code(), absl::StatusCode::kFailedPrecondition);   // free page
  EXPECT_EQ(pool.release(0).code(), absl::StatusCode::kFailedPrecondition);  // double release
  EXPECT_EQ(pool.release(-1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.retain(2).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool.ref_count(7), 0);
  PagePool empty(0);
  EXPECT_EQ(empty.allocate().status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace kiln
