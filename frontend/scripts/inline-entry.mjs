// Puts the component page's script inside index.html: Streamlit serves the page, and every request
// to it waits on a server that is busy rendering the app at that moment (cold start).
import { readFileSync, rmSync, writeFileSync } from "node:fs";

const dir = "../component/streamlit_secure_context/frontend";
const html = readFileSync(`${dir}/index.html`, "utf8");
const tag = /<script type="module" crossorigin src="\.\/(assets\/index-[\w-]+\.js)"><\/script>/;
const match = tag.exec(html);
if (!match) throw new Error("index.html has no entry script to inline");
const code = readFileSync(`${dir}/${match[1]}`, "utf8");
if (/^\s*import\s/m.test(code)) throw new Error(`${match[1]} imports other chunks: it cannot be inlined`);
// "</script" inside the code would end the element early.
if (code.includes("</script")) throw new Error(`${match[1]} contains "</script"`);
writeFileSync(`${dir}/index.html`, html.replace(tag, () => `<script type="module">\n${code}</script>`));
rmSync(`${dir}/${match[1]}`);
