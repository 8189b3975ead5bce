"""The seed's second example (a company-name chain), the OpenTelemetry way.

The old handler needed the same `ContextCallbackHandler` passed to both the model and the chain, and
broke on LCEL chains; here the instrumentation sees every run and the exporter keeps the root chain's
input and final output. Run it with:
    CONTEXT_API_TOKEN=... OTEL_TRACES_EXPORTER=context opentelemetry-instrument python examples/seed_chain.py
"""

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

prompt = ChatPromptTemplate.from_messages([("human", "What is a good name for a company that makes {product}?")])
chain = prompt | FakeListChatModel(responses=["Rainbow Threads"]) | StrOutputParser()
print(chain.invoke({"product": "colorful socks"}))
