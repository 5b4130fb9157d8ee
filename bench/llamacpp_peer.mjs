// llama.cpp (through node-llama-cpp's prebuilt CPU binary) greedy decoding of a GGUF file at batch 1: the CPU speed
// peer of bench/smollm2.py. Not part of dlm_jax; install the peer outside the repository:
//
//     mkdir -p /tmp/lcpp && (cd /tmp/lcpp && npm i -E node-llama-cpp@3.21.1)
//     node bench/llamacpp_peer.mjs --lib /tmp/lcpp --model FILE.gguf --ids '[1,2,3]' --new 32 [--threads 2]
//
// --ids: the prompt's token ids (bench/smollm2.py passes the chat template's ids, so both decode the same row).
// Prints one JSON line: the generated ids (greedy, temperature 0, stopping at --new or the model's end of
// generation), prompt evaluation seconds, generation seconds and tokens/s (the first generated token's time,
// which includes the prompt's evaluation, is counted in the prompt, not the generation).
import path from "node:path";
import {parseArgs} from "node:util";

const {values: a} = parseArgs({options: {
    lib: {type: "string"}, model: {type: "string"}, ids: {type: "string"}, new: {type: "string", default: "32"},
    threads: {type: "string", default: "2"}}});
if (!a.lib || !a.model || !a.ids) {
    console.error("error: pass --lib DIR (where node-llama-cpp is installed), --model FILE.gguf and --ids JSON");
    process.exit(2);
}
const {getLlama} = await import(path.join(path.resolve(a.lib), "node_modules/node-llama-cpp/dist/index.js"));
const llama = await getLlama({gpu: false, logLevel: "error"});
const model = await llama.loadModel({modelPath: path.resolve(a.model)});
const threads = Number(a.threads);
const context = await model.createContext({contextSize: 2048, threads: {ideal: threads, min: threads}});
const sequence = context.getSequence();
const prompt = JSON.parse(a.ids);
const want = Number(a.new);
const out = [];
const t0 = performance.now();
let t1 = null;
for await (const token of sequence.evaluate(prompt, {temperature: 0})) {
    if (t1 === null) t1 = performance.now();
    if (model.isEogToken(token)) break;
    out.push(token);
    if (out.length >= want) break;
}
const t2 = performance.now();
const gen = (t2 - t1) / 1000;
console.log(JSON.stringify({ids: out, prompt_tokens: prompt.length, prompt_and_first_s: (t1 - t0) / 1000,
    generate_s: gen, tokens_per_s: (out.length - 1) / gen, threads,
    llama_cpp: `${llama.llamaCppRelease.repo} ${llama.llamaCppRelease.release}`}));
await context.dispose();
await model.dispose();
