// Bundles the official rivetkit client into one minified browser ES module,
// plus a text file with the licenses of everything inside it.
//
//   node build.mjs <outfile.js>        (run by ../build-chat-bundle.sh after `npm ci`)
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import * as esbuild from "esbuild";

const outfile = path.resolve(process.argv[2] ?? "rivetkit-client.js");
const licensesFile = outfile.replace(/\.js$/, ".LICENSES.txt");
const rivetkit = JSON.parse(readFileSync("node_modules/rivetkit/package.json", "utf8"));

// zod (a rivetkit dependency) re-exports every locale as `z.locales`, which
// rivetkit never reads: about 260 KB of the bundle. zod itself imports only
// the English one, so that is all the bundle keeps.
const englishZodLocaleOnly = {
  name: "english-zod-locale-only",
  setup(build) {
    build.onLoad({ filter: /[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/ }, () => ({
      contents: 'export { default as en } from "./en.js";',
      loader: "js",
    }));
  },
};

const result = await esbuild.build({
  entryPoints: ["entry.js"],
  bundle: true,
  format: "esm",
  platform: "browser", // picks rivetkit's `browser` export and browser builds of its dependencies
  target: "es2022",
  minify: true,
  legalComments: "eof",
  charset: "utf8",
  banner: {
    js: `/*! rivetkit@${rivetkit.version} client (${rivetkit.license}), bundled by scripts/build-chat-bundle.sh; licenses: ${path.basename(licensesFile)} */`,
  },
  outfile,
  metafile: true,
  plugins: [englishZodLocaleOnly],
  logLevel: "warning",
});

// One entry per npm package that contributed code, with its license text.
const packages = new Map();
for (const [input, info] of Object.entries(result.metafile.outputs[path.relative(process.cwd(), outfile)]?.inputs ?? {})) {
  if (info.bytesInOutput === 0) continue;
  const match = input.match(/^(.*node_modules[\\/](?:@[^\\/]+[\\/])?[^\\/]+)[\\/]/);
  if (match && !packages.has(match[1])) packages.set(match[1], info.bytesInOutput);
}
const sections = [...packages.keys()].sort().map((dir) => {
  const pkg = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"));
  const files = readdirSync(dir).filter((name) => /^(licen[cs]e|copying|notice)/i.test(name)).sort();
  const text = files.length
    ? files.map((name) => readFileSync(path.join(dir, name), "utf8").trim()).join("\n\n")
    : "(the package ships no license file)";
  return `${pkg.name}@${pkg.version} — ${pkg.license ?? "see below"}\n\n${text}\n`;
});
writeFileSync(
  licensesFile,
  `Third-party software in ${path.basename(outfile)} (built from npm rivetkit@${rivetkit.version}).\n\n` +
    sections.join(`\n${"-".repeat(72)}\n\n`),
);

const size = readFileSync(outfile).length;
console.log(`${outfile}: ${(size / 1024).toFixed(1)} KiB, ${packages.size} packages`);
