// The MDN HTTP Observatory's scan (the grader behind developer.mozilla.org/observatory), run locally
// against a host the public scanner cannot reach: a lab name resolved to a given address, a port and
// a path of our choosing. Same retrieval, tests and grading as the package's own scan(), which takes
// only a host name; trust the lab CA with NODE_EXTRA_CA_CERTS.
//   node scan.mjs HOST ADDRESS [HTTPS_PORT] [PATH]   -> JSON {grade, score, tests: {name: {result, scoreModifier}}}
import dns from "node:dns";
import fs from "node:fs";
import { fileURLToPath } from "node:url";

const [host, address, httpsPort = "443", path = "/"] = process.argv.slice(2);
if (!host || !address) {
  console.error("usage: node scan.mjs HOST ADDRESS [HTTPS_PORT] [PATH]");
  process.exit(64);
}

// Every connection to HOST goes to ADDRESS (node's net module looks dns.lookup up at each connect).
const systemLookup = dns.lookup;
dns.lookup = (name, options, callback) => {
  if (typeof options === "function") {
    callback = options;
    options = {};
  }
  if (name !== host) return systemLookup(name, options, callback);
  const family = address.includes(":") ? 6 : 4;
  if (options && options.all) return callback(null, [{ address, family }]);
  return callback(null, address, family);
};

// The package's install script downloads Chromium's HSTS preload list (installed here without
// scripts: no outside network). A lab name is on no such list: an empty one grades the same.
const preload = fileURLToPath(new URL("node_modules/@mdn/mdn-http-observatory/conf/hsts-preload.json", import.meta.url));
if (!fs.existsSync(preload)) fs.writeFileSync(preload, "{}\n");

const base = "@mdn/mdn-http-observatory/src";
const { retrieve } = await import(`${base}/retriever/retriever.js`);
const { ALL_TESTS } = await import(`${base}/constants.js`);
const { MINIMUM_SCORE_FOR_EXTRA_CREDIT } = await import(`${base}/grader/charts.js`);
const { getGradeForScore, getScoreModifier } = await import(`${base}/grader/grader.js`);

const options = { path };
if (httpsPort !== "443") options.httpsPort = httpsPort;
const r = await retrieve(host, options);
if (!r.responses.auto) {
  console.log(JSON.stringify({ error: "the site seems to be down" }));
  process.exit(1);
}
const { status } = r.responses.auto;
if (status < 200 || (status >= 400 && ![401, 403].includes(status))) {
  console.log(JSON.stringify({ error: `unexpected HTTP status ${status}` }));
  process.exit(1);
}
// As scan() in the package's src/scanner/index.js.
let withExtraCredit = 100;
let uncurved = 100;
const tests = {};
for (const test of ALL_TESTS) {
  const result = test(r);
  if (result.result) {
    const modifier = getScoreModifier(result.result);
    withExtraCredit += modifier;
    if (modifier < 0) uncurved += modifier;
    tests[test.name.replace(/Test$/, "")] = { result: result.result, pass: result.pass, scoreModifier: modifier };
  }
}
const final = getGradeForScore(uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT ? withExtraCredit : uncurved);
console.log(JSON.stringify({ grade: final.grade, score: final.score, status, tests }, null, 2));
