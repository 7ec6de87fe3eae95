// Model-based randomized protocol test: a seeded generator of operations on up to four
// connections (writes in messy but valid JSON, stream and batch reads, invalid messages, lines
// that are not JSON or too long, half-closes, closes and resets, several connections writing
// at once, restarts after SIGTERM and after kill -9, with writes in flight or not), run against
// the real binary and checked line by line by the reference model in test/protocol_model.hpp.
// After every restart and at the end the log read back must be exactly the model's.
//
// The expected canonical bytes of each entry come from fuzz/json_reference.hpp's
// json-stable-stringify of the tree the generator built, not from the server's own code.
//
// On a failure the test shrinks the operation list (dropping runs of operations while the
// failure remains) and prints the seed, the failure and the shrunk list. MODEL_SEED=<n> replays
// one seed; MODEL_SEEDS and MODEL_OPS set the run's size (make model-test runs it at length).
#include "test/model_harness.hpp"

using namespace model;

TEST_CASE("model-based protocol test: seeded random operations on several connections, with restarts, agree with the reference model") {
  // make test runs a slice; make model-test runs it at length (MODEL_SEEDS, MODEL_OPS).
  const bool replay = env_number("MODEL_SEED", 0) != 0;
  const uint64_t first = replay ? env_number("MODEL_SEED", 0) : 1;
  const uint64_t seeds = replay ? 1 : env_number("MODEL_SEEDS", 4);
  const size_t count = env_number("MODEL_OPS", 150);
  uint64_t operations = 0, lines = 0, restarts = 0;
  for (uint64_t seed = first; seed < first + seeds; ++seed) {
    const std::vector<Op> ops = generate(seed, count);
    const Outcome o = ModelRun(sync_always_for(seed)).run(ops);
    operations += o.operations;
    lines += o.lines;
    restarts += o.restarts;
    if (o.failure.empty()) continue;
    std::string failure = o.failure;
    const std::vector<Op> shrunk = shrink(ops, sync_always_for(seed), &failure);
    std::string list;
    for (const Op& op : shrunk) list += "  " + describe(op) + "\n";
    FAIL("model test failed: seed " << seed << " (MODEL_SEED=" << seed << " MODEL_OPS=" << count
                                    << " replays it), SYNC=" << std::string(sync_always_for(seed) ? "always" : "none") << "\n"
                                    << "failure (shrunk run): " << failure << "\n"
                                    << "operations, shrunk from " << ops.size() << " to " << shrunk.size() << ":\n"
                                    << list);
  }
  MESSAGE("model test: " << seeds << " seeds, " << operations << " operations, " << restarts << " restarts, "
                         << lines << " lines checked");
}
