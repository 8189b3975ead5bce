"""The seed's first example, the OpenTelemetry way: no callback handler, no Context code at all.

Run it with:
    CONTEXT_API_TOKEN=... OTEL_TRACES_EXPORTER=context opentelemetry-instrument python examples/seed_chat.py

LangChain's fake chat model stands in for `ChatOpenAI` so the example needs no key or network; swap in
any real chat model and nothing else changes.
"""

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import HumanMessage, SystemMessage

chat = FakeListChatModel(responses=["J'adore la programmation."])
messages = [
    SystemMessage(content="You are a helpful assistant that translates English to French."),
    HumanMessage(content="I love programming."),
]
print(chat.invoke(messages).content)
