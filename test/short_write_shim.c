/* LD_PRELOAD shim for the fault tests: makes one write to a chosen file short, and the retry
 * that follows fail with ENOSPC, as a filling disk does. Used by test/fault_test.cpp.
 *
 *   SHIM_PATH   substring of the file's path (/proc/self/fd/N) that selects the calls,
 *               e.g. "/leveldb/index" or "/blobs/tmp/"
 *   SHIM_EXCLUDE  substring of the paths never selected, even when SHIM_PATH is in them
 *               (e.g. "/blobs/LOCK" beside SHIM_PATH "/blobs/")
 *   SHIM_NTH    the Nth selected write/pwrite call (1-based) is the short one
 *   SHIM_BYTES  how many bytes that call writes (clamped to 1..n-1; 0 or absent: n/2)
 *   SHIM_FAILS  how many selected calls after it fail with ENOSPC (default 1; the rest succeed)
 *   SHIM_SKIP_BYTES  comma-separated sizes of calls that are never selected (the journal's
 *               creation and its 4096-byte headers, when only its appends are to be counted)
 *
 * Build: cc -shared -fPIC -O2 -o test/short_write_shim.so test/short_write_shim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void*, size_t);
static ssize_t (*real_pwrite)(int, const void*, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void*, size_t, off_t);

static const char* shim_path;
static const char* shim_exclude;
static long shim_nth, shim_bytes, shim_fails = 1;
static long seen;       /* selected calls so far */
static long fails_left; /* ENOSPC still to return after the short write */
static int armed;
static long skip_bytes[8];
static int skip_count;

__attribute__((constructor)) static void shim_init(void) {
  real_write = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  real_pwrite = (ssize_t(*)(int, const void*, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
  real_pwrite64 = (ssize_t(*)(int, const void*, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
  shim_path = getenv("SHIM_PATH");
  shim_exclude = getenv("SHIM_EXCLUDE");
  const char* s = getenv("SHIM_NTH");
  shim_nth = s ? atol(s) : 0;
  s = getenv("SHIM_BYTES");
  shim_bytes = s ? atol(s) : 0;
  s = getenv("SHIM_FAILS");
  if (s) shim_fails = atol(s);
  s = getenv("SHIM_SKIP_BYTES");
  while (s && *s && skip_count < 8) {
    char* end;
    long v = strtol(s, &end, 10);
    if (end == s) break;
    skip_bytes[skip_count++] = v;
    s = *end == ',' ? end + 1 : end;
  }
  armed = shim_path && *shim_path && shim_nth > 0;
}

static int selected(int fd) {
  if (!armed || fd < 0) return 0;
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  int saved = errno;
  ssize_t n = readlink(link, path, sizeof path - 1);
  errno = saved;
  if (n <= 0) return 0;
  path[n] = 0;
  if (shim_exclude && *shim_exclude && strstr(path, shim_exclude) != NULL) return 0;
  return strstr(path, shim_path) != NULL;
}

/* Returns -2 to let the call through unchanged, else the length to write (or -1: fail). */
static long decide(int fd, size_t n) {
  if (!selected(fd)) return -2;
  for (int i = 0; i < skip_count; i++)
    if ((long)n == skip_bytes[i]) return -2;
  if (fails_left > 0) {
    fails_left--;
    return -1;
  }
  if (++seen != shim_nth || n < 2) return -2;
  long k = shim_bytes > 0 ? shim_bytes : (long)(n / 2);
  if (k >= (long)n) k = (long)n - 1;
  if (k < 1) k = 1;
  fails_left = shim_fails;
  return k;
}

ssize_t write(int fd, const void* buf, size_t n) {
  long k = decide(fd, n);
  if (k == -1) {
    errno = ENOSPC;
    return -1;
  }
  return real_write(fd, buf, k == -2 ? n : (size_t)k);
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t off) {
  long k = decide(fd, n);
  if (k == -1) {
    errno = ENOSPC;
    return -1;
  }
  return real_pwrite(fd, buf, k == -2 ? n : (size_t)k, off);
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t off) {
  long k = decide(fd, n);
  if (k == -1) {
    errno = ENOSPC;
    return -1;
  }
  return (real_pwrite64 ? real_pwrite64 : real_pwrite)(fd, buf, k == -2 ? n : (size_t)k, off);
}
