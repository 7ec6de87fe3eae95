// Power loss, explored (issue 9), on the commit path of the write-ahead journal (issue 10):
// every workload (crash_workloads.hpp) is recorded once under strace, and the crash-state
// explorer (crash_explorer.hpp) has the real server recover every state a power cut at each
// recorded call may leave under the persistence model (fs_model.hpp). Every run, recorded or recovering,
// has a 128 KiB journal (small_journal()), so that checkpoints, side switches, retired sides
// written again and resets all happen inside the workloads.
//
// `make test` runs a bounded, seeded slice; `make crash-states` (CRASH_STATES=full) the whole
// exploration. SEED=<n> replays either; CRASH_JOBS sets how many states recover at once;
// CRASH_STATE_DIR where they are written (default /dev/shm: the states need no real disk).
// Each exploration prints "<workload>, <mode>: T trace points, N states, M violations"; the
// run ends with "N passed, M failed".
#include "crash_states_harness.hpp"

using namespace crash;

TEST_CASE("crash states: single writes one at a time, SYNC=always") {
  Recorder r("single writes", "SYNC=always");
  explore_and_expect_none(single_writes(r, "always"));
}
TEST_CASE("crash states: single writes one at a time, SYNC=none") {
  Recorder r("single writes", "SYNC=none");
  explore_and_expect_none(single_writes(r, "none"));
}
TEST_CASE("crash states: batches that fill the journal's sides (checkpoints, a retired side written again), SYNC=always") {
  Recorder r("batches filling journal sides", "SYNC=always");
  explore_and_expect_none(checkpointed_batches(r, "always"));
}
TEST_CASE("crash states: the same batches, SYNC=none") {
  Recorder r("batches filling journal sides", "SYNC=none");
  explore_and_expect_none(checkpointed_batches(r, "none"));
}
TEST_CASE("crash states: checkpoints after a second without writes, each side retired and written again, SYNC=always") {
  Recorder r("idle checkpoints", "SYNC=always");
  explore_and_expect_none(idle_checkpoints(r));
}
TEST_CASE("crash states: the same entry stored under SYNC=none, then written again to a SYNC=always server") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  explore_and_expect_none(same_entry_twice(r));
}
TEST_CASE("crash states: a SYNC=none server killed, then restarted with SYNC=none") {
  Recorder r("SYNC=none killed and restarted", "SYNC=none");
  explore_and_expect_none(none_killed_and_restarted(r));
}
TEST_CASE("crash states: failed journal append and journal sync, each retried, SYNC=always") {
  Recorder r("faults then retry", "SYNC=always");
  explore_and_expect_none(enospc_then_retry(r, "always"));
}
TEST_CASE("crash states: failed blob write and index append, each retried, SYNC=none") {
  Recorder r("faults then retry", "SYNC=none");
  explore_and_expect_none(enospc_then_retry(r, "none"));
}
TEST_CASE("crash states: a checkpoint whose syncfs fails, writes refused, exit 1, the journal replayed by the next start, SYNC=always") {
  Recorder r("failed checkpoint, restart", "SYNC=always");
  explore_and_expect_none(failed_checkpoint(r));
}
TEST_CASE("crash states: the store thread cannot make a confirmed entry's blob, writes refused, exit 1, the journal replayed by the next start, SYNC=always") {
  Recorder r("failed making, restart", "SYNC=always");
  explore_and_expect_none(failed_making(r));
}
TEST_CASE("crash states: confirmations ahead of their blob files and index records (the store thread slowed), killed, the rest made by the next start, SYNC=always") {
  Recorder r("confirmations ahead of their files", "SYNC=always");
  explore_and_expect_none(confirmed_before_made(r));
}
TEST_CASE("crash states: a restart on a torn tail, then more writes, SYNC=always") {
  Recorder r("torn tail, restart, more writes", "SYNC=always");
  explore_and_expect_none(torn_tail_restart(r, "always"));
}
TEST_CASE("crash states: a restart on a torn tail, then more writes, SYNC=none") {
  Recorder r("torn tail, restart, more writes", "SYNC=none");
  explore_and_expect_none(torn_tail_restart(r, "none"));
}
TEST_CASE("crash states: concurrent writers and a reader, SYNC=always") {
  Recorder r("concurrent writers and a reader", "SYNC=always");
  explore_and_expect_none(concurrent(r, "always"));
}
TEST_CASE("crash states: concurrent writers and a reader, SYNC=none") {
  Recorder r("concurrent writers and a reader", "SYNC=none");
  explore_and_expect_none(concurrent(r, "none"));
}
TEST_CASE("crash states: a SYNC=always server killed with entries in its journal; the replay and the reset of the next start, SYNC=always") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=always");
  explore_and_expect_none(replay_after_kill(r, "always"));
}
TEST_CASE("crash states: a SYNC=always server killed with entries in its journal; the replay and the reset of the next start, SYNC=none") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=none");
  explore_and_expect_none(replay_after_kill(r, "none"));
}

TEST_CASE("sync removal: single writes (the journal append's fdatasync, the clean stop's syncfs and reset, the startup syncs)") {
  Recorder r("single writes", "SYNC=always");
  prove_syncs_needed(single_writes(r, "always"));
}
TEST_CASE("sync removal: batches filling the journal's sides (the checkpoint's syncfs and its retire's fdatasync)") {
  Recorder r("batches filling journal sides", "SYNC=always");
  // Whatever the timing made vacuous, some checkpoint's syncfs and some append's fdatasync here
  // are needed, and the explorer must see that each is.
  auto caught = prove_syncs_needed(checkpointed_batches(r, "always"));
  CHECK(caught[Role::Checkpoint] > 0);
  CHECK(caught[Role::Append] > 0);
}
TEST_CASE("sync removal: idle checkpoints") {
  Recorder r("idle checkpoints", "SYNC=always");
  prove_syncs_needed(idle_checkpoints(r));
}
TEST_CASE("sync removal: failed journal appends and syncs, retried") {
  Recorder r("faults then retry", "SYNC=always");
  prove_syncs_needed(enospc_then_retry(r, "always"));
}
TEST_CASE("sync removal: without the startup syncs of a SYNC=always server, an entry stored under SYNC=none and confirmed again can be lost") {
  Recorder r("the same entry twice", "SYNC=none, then SYNC=always");
  prove_syncs_needed(same_entry_twice(r));
}
TEST_CASE("sync removal: the replay of a killed server's journal (its startup syncs)") {
  Recorder r("journal replayed after kill -9", "SYNC=always, then SYNC=always");
  prove_syncs_needed(replay_after_kill(r, "always"));
}
