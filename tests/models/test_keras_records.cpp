// The record protocol between the Keras HDF5 reader child and cxr
// (src/models/keras_child.h): what the child writes reads back as written,
// and a stream that does not fit the protocol (cut short, trailing bytes, a
// length or shape beyond what arrived) is one ModelError naming the file,
// never a crash or an allocation the bytes do not back.
#include <unistd.h>

#include <cstring>

#include "../../src/models/keras_child.h"
#include "cxr/common/error.h"
#include "test_util.h"

namespace {

using cxr::models::detail::PipeWriter;
using cxr::models::detail::RawWeight;
using cxr::models::detail::Records;
using cxr::models::detail::Tag;
using cxr::testing::error_of;

const std::string kPath = "w.h5";

// What `write` sends through a real pipe (small: within its buffer).
std::string sent(const std::function<void(PipeWriter&)>& write) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  {
    PipeWriter out(fds[1]);
    write(out);
  }
  ::close(fds[1]);
  std::string data;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) {
    data.append(buf, static_cast<size_t>(n));
  }
  ::close(fds[0]);
  return data;
}

// Bytes of a record built by hand, for streams the child never writes.
std::string u32(uint32_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 4);
}
std::string u64(uint64_t v) {
  return std::string(reinterpret_cast<const char*>(&v), 8);
}
std::string text(const std::string& s) {
  return u32(static_cast<uint32_t>(s.size())) + s;
}

// The error of reading every record of `data` to the end.
std::string read_all_error(const std::string& data) {
  return error_of<cxr::ModelError>([&] {
    Records rec(kPath, data);
    Tag t;
    while (rec.next(&t)) {
      if (t == Tag::kWeight) {
        rec.weight();
      } else {
        rec.text();
      }
    }
  });
}

bool is_malformed(const std::string& e) {
  return e.find(
             "weights file 'w.h5': not a readable Keras HDF5 weights "
             "file (the HDF5 reader process sent malformed data)") !=
         std::string::npos;
}

TEST(KerasRecords, WhatTheChildWritesReadsBackAsWritten) {
  RawWeight w;
  w.name = "Conv1/kernel:0";
  w.shape = {2, 3};
  w.values = {1, 2, 3, 4, 5, 6.5f};
  const std::string data = sent([&](PipeWriter& out) {
    out.tag(Tag::kLayer);
    out.text("Conv1");
    out.weight(w);
    out.tag(Tag::kDone);
  });
  Records rec(kPath, data);
  Tag t;
  ASSERT_TRUE(rec.next(&t));
  EXPECT_EQ(t, Tag::kLayer);
  EXPECT_EQ(rec.text(), "Conv1");
  ASSERT_TRUE(rec.next(&t));
  EXPECT_EQ(t, Tag::kWeight);
  const RawWeight back = rec.weight();
  EXPECT_EQ(back.name, "Conv1/kernel:0");
  EXPECT_EQ(back.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back.values, (std::vector<float>{1, 2, 3, 4, 5, 6.5f}));
  EXPECT_FALSE(rec.next(&t));  // the closing 'D'
}

TEST(KerasRecords, AWeightWithoutValuesReadsBackEmpty) {
  // A dataset of shape [0, 3] (legal in HDF5): no values, and no copy into
  // or out of an empty vector's null data().
  RawWeight w;
  w.name = "k";
  w.shape = {0, 3};
  const std::string data = sent([&](PipeWriter& out) {
    out.weight(w);
    out.tag(Tag::kDone);
  });
  Records rec(kPath, data);
  Tag t;
  ASSERT_TRUE(rec.next(&t));
  const RawWeight back = rec.weight();
  EXPECT_EQ(back.shape, (std::vector<int64_t>{0, 3}));
  EXPECT_TRUE(back.values.empty());
  EXPECT_FALSE(rec.next(&t));
}

TEST(KerasRecords, TheReadersErrorsComeThroughAsOneModelError) {
  // 'E' is the reader's ModelError, which already names the file.
  EXPECT_EQ(read_all_error("E" + text("weights file 'w.h5': layer 'x' bad")),
            "weights file 'w.h5': layer 'x' bad");
  // 'X' is any other exception: the file is named in front of it.
  EXPECT_EQ(read_all_error("X" + text("std::bad_alloc")),
            "weights file 'w.h5': std::bad_alloc");
}

TEST(KerasRecords, StreamsOutsideTheProtocolAreMalformed) {
  const std::string name = "N" + text("Conv1");
  // Cut short: no closing 'D', or cut inside a record.
  EXPECT_TRUE(is_malformed(read_all_error(name)));
  EXPECT_TRUE(is_malformed(read_all_error(name.substr(0, 3))));
  EXPECT_TRUE(is_malformed(read_all_error("")));
  // Bytes after the closing 'D'.
  EXPECT_TRUE(is_malformed(read_all_error(name + "D" + "N")));
  // A name longer than what arrived.
  EXPECT_TRUE(is_malformed(read_all_error("N" + u32(1000) + "abc" + "D")));
  // A weight of rank 9 (the reader sends at most 8).
  EXPECT_TRUE(is_malformed(read_all_error("W" + text("k") + u32(9) + "D")));
  // A weight whose shape claims more values than the bytes that follow: no
  // tensor of that size is allocated.
  EXPECT_TRUE(is_malformed(
      read_all_error("W" + text("k") + u32(2) + u64(1000) + u64(1000) + "D")));
  // A dimension beyond the dataset bound, or a product that overflows.
  EXPECT_TRUE(is_malformed(
      read_all_error("W" + text("k") + u32(1) + u64(uint64_t(1) << 40))));
  EXPECT_TRUE(is_malformed(read_all_error("W" + text("k") + u32(3) +
                                          u64(uint64_t(1) << 25) +
                                          u64(uint64_t(1) << 25) + u64(4))));
}

TEST(KerasRecords, AWellFormedEmptyStreamHasNoRecords) {
  Records rec(kPath, "D");
  Tag t;
  EXPECT_FALSE(rec.next(&t));
}

}  // namespace
