"""LangChain 1.x agents and LangGraph graphs, offline: the runs the LangGraph tests and fixtures are made of.

Each scenario runs one or more top-level runs and returns, per expected thread, its first user message
and final answer. The models are scripted: they return `AIMessage`s with `tool_calls`, so the agents
call real tools through LangGraph's tool node without a network or a key.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypedDict

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt

Expected = list[tuple[str, str]]  # per thread: (first user message, final answer)


class ScriptedChatModel(BaseChatModel):
    """A chat model that replies from a script, tool calls included; `bind_tools` keeps the script."""

    replies: list[AIMessage]
    position: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        reply = self.replies[self.position % len(self.replies)]
        self.position += 1
        return ChatResult(generations=[ChatGeneration(message=reply)])

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def calls(name: str, call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id, "type": "tool_call"}])


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two numbers."""
    return a * b


@tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    return f"18°C and sunny in {city}"


QUESTION = "What is 6 times 7?"
ANSWER = "6 times 7 is 42."


def math_agent() -> Any:
    model = ScriptedChatModel(replies=[calls("multiply", "call_1", a=6, b=7), AIMessage(ANSWER)])
    return create_agent(model, [multiply], system_prompt="You are a calculator.")


def ask(question: str = QUESTION) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}]}


def agent_invoke() -> Expected:
    math_agent().invoke(ask())
    return [(QUESTION, ANSWER)]


def agent_stream_values() -> Expected:
    for _ in math_agent().stream({"messages": [("user", QUESTION)]}, stream_mode="values"):
        pass
    return [(QUESTION, ANSWER)]


def agent_stream_updates() -> Expected:
    for _ in math_agent().stream(ask(), stream_mode="updates"):
        pass
    return [(QUESTION, ANSWER)]


def agent_ainvoke() -> Expected:
    asyncio.run(math_agent().ainvoke(ask()))
    return [(QUESTION, ANSWER)]


def agent_astream() -> Expected:
    async def run() -> None:
        async for _ in math_agent().astream(ask()):
            pass

    asyncio.run(run())
    return [(QUESTION, ANSWER)]


class Article(TypedDict, total=False):
    topic: str
    outline: str
    text: str


def state_graph() -> Expected:
    """Three nodes over custom state keys, one of them a model call."""
    writer = ScriptedChatModel(replies=[AIMessage("Cats sleep a lot.")])
    graph = StateGraph(Article)
    graph.add_node("plan", lambda state: {"outline": f"1. about {state['topic']}"})
    graph.add_node("write", lambda state: {"text": writer.invoke(state["outline"]).content})
    graph.add_node("polish", lambda state: {"text": state["text"] + " The end."})
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "write")
    graph.add_edge("write", "polish")
    graph.add_edge("polish", END)
    graph.compile().invoke({"topic": "cats"})
    return [("cats", '{"topic":"cats","outline":"1. about cats","text":"Cats sleep a lot. The end."}')]


def subgraph() -> Expected:
    """A messages graph whose middle node is a compiled graph of its own."""
    model = ScriptedChatModel(replies=[AIMessage("Paris is the capital of France.")])
    inner = StateGraph(MessagesState)
    inner.add_node("answer", lambda state: {"messages": [model.invoke(state["messages"])]})
    inner.add_edge(START, "answer")
    outer = StateGraph(MessagesState)
    outer.add_node("greet", lambda state: {"messages": []})
    outer.add_node("research", inner.compile())
    outer.add_edge(START, "greet")
    outer.add_edge("greet", "research")
    outer.add_edge("research", END)
    outer.compile().invoke(ask("What is the capital of France?"))
    return [("What is the capital of France?", "Paris is the capital of France.")]


def supervisor() -> Expected:
    """An agent that calls another agent as a tool: one run, one thread."""
    researcher = math_agent()

    @tool
    def ask_researcher(question: str) -> str:
        """Ask the research agent."""
        return researcher.invoke(ask(question))["messages"][-1].content

    model = ScriptedChatModel(
        replies=[calls("ask_researcher", "call_r", question=QUESTION), AIMessage("The researcher says 42.")]
    )
    create_agent(model, [ask_researcher]).invoke(ask("Ask the researcher what 6 times 7 is."))
    return [("Ask the researcher what 6 times 7 is.", "The researcher says 42.")]


class Jokes(TypedDict):
    topic: str
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]


def send_fan_out() -> Expected:
    """`Send` runs one node per subject in parallel; their results are reduced into the state."""
    graph = StateGraph(Jokes)
    graph.add_node("pick", lambda state: {"subjects": ["cats", "dogs"]})
    graph.add_node("joke", lambda state: {"jokes": [f"a joke about {state['topic']}"]})
    graph.add_edge(START, "pick")
    fan_out = lambda state: [Send("joke", {"topic": s}) for s in state["subjects"]]  # noqa: E731
    graph.add_conditional_edges("pick", fan_out, ["joke"])
    graph.add_edge("joke", END)
    graph.compile().invoke({"topic": "animals", "subjects": [], "jokes": []})
    answer = '{"topic":"animals","subjects":["cats","dogs"],"jokes":["a joke about cats","a joke about dogs"]}'
    return [("animals", answer)]  # empty keys of the input state left out


def checkpointer_conversation() -> Expected:
    """Three turns of one LangGraph thread (`thread_id`): one conversation."""
    model = ScriptedChatModel(
        replies=[
            AIMessage("Hello Ada!"),
            calls("multiply", "call_1", a=6, b=7),
            AIMessage(ANSWER),
            AIMessage("Your name is Ada."),
        ]
    )
    agent = create_agent(model, [multiply], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "conversation-1"}}
    turns = [("Hi, I am Ada.", "Hello Ada!"), (QUESTION, ANSWER), ("What is my name?", "Your name is Ada.")]
    for question, _ in turns:
        agent.invoke(ask(question), config)
    return turns


class Approval(TypedDict, total=False):
    request: str
    approved: bool
    result: str


def interrupt_and_resume() -> Expected:
    """A human-in-the-loop `interrupt()`, then `Command(resume=...)` under the same `thread_id`."""
    graph = StateGraph(Approval)
    graph.add_node("review", lambda state: {"approved": interrupt(f"Deploy {state['request']}?") == "yes"})
    graph.add_node("act", lambda state: {"result": "deployed" if state["approved"] else "cancelled"})
    graph.add_edge(START, "review")
    graph.add_edge("review", "act")
    graph.add_edge("act", END)
    app = graph.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "approval-1"}}
    app.invoke({"request": "v2"}, config)
    app.invoke(Command(resume="yes"), config)
    return [("v2", "Deploy v2?"), ("yes", '{"request":"v2","approved":true,"result":"deployed"}')]


SCENARIOS: dict[str, Callable[[], Expected]] = {
    f.__name__: f
    for f in (
        agent_invoke,
        agent_stream_values,
        agent_stream_updates,
        agent_ainvoke,
        agent_astream,
        state_graph,
        subgraph,
        supervisor,
        send_fan_out,
        checkpointer_conversation,
        interrupt_and_resume,
    )
}

# The scenarios whose turns share a LangGraph thread id (a checkpointer's conversation, a resumed run): one
# Context thread for all of them, keyed by that id.
SESSIONS = {"checkpointer_conversation": "conversation-1", "interrupt_and_resume": "approval-1"}
