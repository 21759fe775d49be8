// Continue's tab-autocomplete path: constructLlmApi({provider: "mistral"}).fimStream(...).
// Usage: node fim_stream.mjs '<json: {apiBase, apiKey, body}>'; prints {text, chunks, finish}.
import { constructLlmApi } from "@continuedev/openai-adapters";

const { apiBase, apiKey, body } = JSON.parse(process.argv[2]);
const api = constructLlmApi({ provider: "mistral", apiBase, apiKey });
let text = "";
let chunks = 0;
let finish = null;
for await (const chunk of api.fimStream(body, new AbortController().signal)) {
  const choice = chunk.choices[0];
  if (typeof choice.delta.content !== "string") throw new Error("delta.content is not a string");
  text += choice.delta.content;
  finish = choice.finish_reason ?? finish;
  chunks += 1;
}
console.log(JSON.stringify({ text, chunks, finish }));
