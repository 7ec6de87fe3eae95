// What the static binary does with an exception nothing caught (linked into static/tcp-log-server
// alone; see the Makefile). libstdc++'s default, its verbose terminate handler, names the
// exception's type through the C++ demangler, and the demangler and what it pulls in are 49 KB
// of the 1 MiB the static binary may take. This handler says the rest in one line on stderr,
// what() of a std::exception, and then aborts as the default does.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>

namespace {

void say(const char* text) {
  for (size_t left = std::strlen(text); left > 0;) {
    const ssize_t n = ::write(STDERR_FILENO, text, left);
    if (n <= 0) return;
    text += n;
    left -= static_cast<size_t>(n);
  }
}

[[noreturn]] void terminate_in_one_line() noexcept {
  static bool entered = false;  // a throw from what() comes back here: abort at once then
  if (!entered) {
    entered = true;
    if (std::exception_ptr current = std::current_exception()) {
      try {
        std::rethrow_exception(current);
      } catch (const std::exception& e) {
        say("tcp-log-server: terminate called after an uncaught exception: ");
        say(e.what());
        say("\n");
      } catch (...) {
        say("tcp-log-server: terminate called after an uncaught exception of a type not derived from std::exception\n");
      }
    } else {
      say("tcp-log-server: terminate called without an active exception\n");
    }
  }
  std::abort();
}

}  // namespace

// libstdc++ keeps the handler std::terminate calls in this variable, defined in its archive with
// the verbose handler as its value. Defined here, the archive's definition, and the demangler
// with it, stay out of a static link. (std::set_terminate would change the handler but not what
// is linked.)
namespace __cxxabiv1 {
std::terminate_handler __terminate_handler = terminate_in_one_line;
}  // namespace __cxxabiv1
