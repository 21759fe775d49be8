// Continue's chat and edit roles: constructLlmApi({provider}).chatCompletionStream(...), for
// provider "openai" or "mistral" (the config's `provider`).
// Usage: node chat_stream.mjs '<json: {provider, apiBase, apiKey, body}>'; prints {text, finish}.
import { constructLlmApi } from "@continuedev/openai-adapters";

const { provider, apiBase, apiKey, body } = JSON.parse(process.argv[2]);
const api = constructLlmApi({ provider, apiBase, apiKey });
let text = "";
let finish = null;
for await (const chunk of api.chatCompletionStream(body, new AbortController().signal)) {
  const choice = chunk.choices[0];
  if (!choice) continue; // a usage chunk
  text += choice.delta.content ?? "";
  finish = choice.finish_reason ?? finish;
}
console.log(JSON.stringify({ text, finish }));
