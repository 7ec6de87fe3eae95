// The documentation's links: every relative link and anchor in README.md and doc/*.md resolves
// (the file exists relative to the page that links to it; an #anchor names a heading of its
// target by GitHub's slug rules), every path the manual page's SEE ALSO names exists, and every
// test case doc/hacking.md cites is a test case of the file it names. Nothing is fetched:
// http(s) and mailto links are left alone. Run from the repository root, as make test does.
#include <doctest/doctest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test/harness.hpp"

namespace fs = std::filesystem;
using harness::detail::complete_lines;
using test_support::read_file;

namespace {

// GitHub's anchor for a heading's text: links replaced by their text, lowercased (ASCII),
// every character but letters, digits, spaces, '-' and '_' removed, spaces turned into '-'.
// Bytes of non-ASCII characters are kept, as GitHub keeps non-ASCII letters.
std::string slug(std::string text) {
  static const std::regex link(R"(\[([^\]]*)\]\([^)]*\))");
  text = std::regex_replace(text, link, "$1");
  std::string out;
  for (unsigned char c : text) {
    if (c >= 0x80 || std::isalnum(c) || c == '-' || c == '_') out += static_cast<char>(std::tolower(c));
    else if (c == ' ') out += '-';
  }
  return out;
}

struct Page {
  std::vector<std::string> lines;   // as in the file
  std::vector<bool> in_code;        // the line is inside a fenced code block, or a fence
};

Page read_page(const fs::path& path) {
  Page page;
  page.lines = complete_lines(read_file(path.string()));
  bool code = false;
  std::string fence;
  for (const std::string& line : page.lines) {
    size_t indent = line.find_first_not_of(' ');
    std::string rest = indent == std::string::npos || indent > 3 ? "" : line.substr(indent);
    if (!code && (rest.rfind("```", 0) == 0 || rest.rfind("~~~", 0) == 0)) {
      code = true;
      fence = rest.substr(0, 3);
      page.in_code.push_back(true);
    } else if (code && rest.rfind(fence, 0) == 0 && rest.find_first_not_of(fence[0]) == std::string::npos) {
      code = false;
      page.in_code.push_back(true);
    } else {
      page.in_code.push_back(code);
    }
  }
  return page;
}

// The anchors of a page's headings (ATX headings outside code blocks); a repeated heading
// gets -1, -2, ... as on GitHub.
std::set<std::string> anchors(const Page& page) {
  static const std::regex heading(R"(^ {0,3}#{1,6}[ \t]+(.*?)[ \t]*#*[ \t]*$)");
  std::set<std::string> out;
  std::map<std::string, int> seen;
  for (size_t i = 0; i < page.lines.size(); i++) {
    std::smatch m;
    if (page.in_code[i] || !std::regex_match(page.lines[i], m, heading)) continue;
    std::string base = slug(m[1]);
    int n = seen[base]++;
    out.insert(n == 0 ? base : base + "-" + std::to_string(n));
  }
  return out;
}

struct Link {
  fs::path page;
  size_t line;  // 1-based
  std::string target;
};

// Inline links [text](target) outside code blocks and code spans.
std::vector<Link> links(const fs::path& path, const Page& page) {
  static const std::regex code_span("`[^`]*`");
  static const std::regex inline_link(R"(\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\))");
  std::vector<Link> out;
  for (size_t i = 0; i < page.lines.size(); i++) {
    if (page.in_code[i]) continue;
    std::string text = std::regex_replace(page.lines[i], code_span, "``");
    for (std::sregex_iterator it(text.begin(), text.end(), inline_link), end; it != end; ++it)
      out.push_back({path, i + 1, it->str(1)});
  }
  return out;
}

std::vector<fs::path> documentation() {
  REQUIRE_MESSAGE(fs::exists("README.md"), "README.md not found; run the tests from the repository root");
  std::vector<fs::path> pages{"README.md"};
  if (fs::is_directory("doc"))
    for (const auto& entry : fs::directory_iterator("doc"))
      if (entry.path().extension() == ".md") pages.push_back(entry.path());
  std::sort(pages.begin() + 1, pages.end());
  return pages;
}

bool external(const std::string& target) {
  for (const char* scheme : {"http://", "https://", "mailto:"})
    if (target.rfind(scheme, 0) == 0) return true;
  return false;
}

// What is wrong with one link, or "" if it resolves.
std::string problem(const Link& link, std::map<fs::path, std::set<std::string>>& anchor_cache) {
  size_t hash = link.target.find('#');
  std::string file = link.target.substr(0, hash);
  std::string anchor = hash == std::string::npos ? "" : link.target.substr(hash + 1);
  fs::path target = file.empty() ? link.page : (link.page.parent_path() / file).lexically_normal();
  if (!fs::exists(target)) return "no file " + target.string();
  if (hash == std::string::npos) return "";
  if (anchor.empty()) return "an empty anchor";
  if (target.extension() != ".md") return "an anchor into " + target.string() + ", which is no Markdown page";
  auto cached = anchor_cache.find(target);
  if (cached == anchor_cache.end()) cached = anchor_cache.emplace(target, anchors(read_page(target))).first;
  if (!cached->second.count(anchor)) return "no heading of " + target.string() + " has the anchor #" + anchor;
  return "";
}

}  // namespace

TEST_CASE("slugs follow GitHub's rules: lowercase, spaces to -, punctuation but - and _ removed") {
  CHECK(slug("Limits: what a client can cost") == "limits-what-a-client-can-cost");
  CHECK(slug("Moving from the Node.js server") == "moving-from-the-nodejs-server");
  CHECK(slug("Fuzzing, sanitizers and a model of the protocol") == "fuzzing-sanitizers-and-a-model-of-the-protocol");
  CHECK(slug("Checking a store: `--check`") == "checking-a-store---check");
  CHECK(slug("What each SYNC mode promises") == "what-each-sync-mode-promises");
  CHECK(slug("`make install`") == "make-install");
  CHECK(slug("snake_case and [a link](x.md)") == "snake_case-and-a-link");
  Page page;
  page.lines = {"# Title", "## Again", "```sh", "# not a heading", "```", "## Again", "### Title ##"};
  page.in_code = {false, false, true, true, true, false, false};
  CHECK(anchors(page) == std::set<std::string>{"title", "again", "again-1", "title-1"});
}

TEST_CASE("every relative link and anchor in README.md and doc/*.md resolves") {
  std::map<fs::path, std::set<std::string>> anchor_cache;
  size_t checked = 0;
  std::set<fs::path> linked;
  for (const fs::path& path : documentation()) {
    for (const Link& link : links(path, read_page(path))) {
      if (external(link.target)) continue;
      checked++;
      std::string why = problem(link, anchor_cache);
      CHECK_MESSAGE(why.empty(), link.page.string() << ":" << link.line << ": (" << link.target << "): " << why);
      std::string file = link.target.substr(0, link.target.find('#'));
      if (!file.empty()) linked.insert((link.page.parent_path() / file).lexically_normal());
    }
  }
  CHECK(checked >= 20);  // the parser finds the links there are
  // Every page of doc/ is linked from some page.
  for (const fs::path& path : documentation())
    if (path != "README.md") CHECK_MESSAGE(linked.count(path), path.string() << " is linked from no page");
}

TEST_CASE("every path the manual page's SEE ALSO names exists") {
  std::vector<std::string> lines = complete_lines(read_file("tcp-log-server.1"));
  auto start = std::find(lines.begin(), lines.end(), ".SH SEE ALSO");
  REQUIRE(start != lines.end());
  static const std::regex path(R"((?:^|[\s(])((?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_-]+\.md)\b)");
  std::vector<std::string> named;
  for (auto it = start + 1; it != lines.end() && it->rfind(".SH", 0) != 0; ++it) {
    std::string text = std::regex_replace(*it, std::regex(R"(\\[%&])"), "");
    text = std::regex_replace(text, std::regex(R"(\\-)"), "-");
    for (std::sregex_iterator m(text.begin(), text.end(), path), end; m != end; ++m) named.push_back(m->str(1));
  }
  CHECK(named.size() >= 2);
  for (const std::string& p : named) CHECK_MESSAGE(fs::exists(p), "SEE ALSO names " << p << ", which does not exist");
}

TEST_CASE("every test case doc/hacking.md cites is a test case of the file it names") {
  REQUIRE(fs::exists("doc/hacking.md"));
  static const std::regex cited(R"re(`(test/[A-Za-z0-9_]+_test\.cpp)` "([^"]+)")re");
  std::map<std::string, std::string> sources;
  size_t count = 0;
  const std::string page = read_file("doc/hacking.md");
  for (std::sregex_iterator m(page.begin(), page.end(), cited), end; m != end; ++m) {
    count++;
    const std::string file = m->str(1), name = m->str(2);
    if (!sources.count(file)) sources[file] = fs::exists(file) ? read_file(file) : "";
    CHECK_MESSAGE(sources[file].find("TEST_CASE(\"" + name + "\")") != std::string::npos,
                  "doc/hacking.md cites " << file << " \"" << name << "\", which is no test case there");
  }
  CHECK(count >= 20);
}
